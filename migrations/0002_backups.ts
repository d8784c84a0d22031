import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * Backups: one row per requested backup (the manifest), advanced by the create-backup job.
 * `fence` is the fencing token of the last holder of the `backups` lock that wrote the row;
 * a worker's writes are conditional on `fence <= token` (DESIGN.md §4.3).
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('backups')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('label', 'text')
    .addColumn('status', 'text', (c) =>
      c.notNull().check(sql`status in ('queued', 'running', 'succeeded', 'failed')`),
    )
    .addColumn('trigger', 'text', (c) => c.notNull().check(sql`trigger in ('manual', 'scheduled')`))
    .addColumn('file_name', 'text')
    .addColumn('size_bytes', 'bigint')
    .addColumn('sha256', 'text')
    .addColumn('schema_version', 'text')
    .addColumn('row_counts', 'text')
    .addColumn('content_sha256', 'text')
    .addColumn('error', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('fence', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addColumn('verify_status', 'text', (c) =>
      c.check(sql`verify_status is null or verify_status in ('queued', 'running', 'passed', 'failed')`),
    )
    .addColumn('verify_job_id', 'text')
    .addColumn('verified_at', 'bigint')
    .addColumn('verify_error', 'text')
    .addPrimaryKeyConstraint('backups_pkey', ['id'])
    .execute();
  // Lists are newest first with a (created_at, id) keyset cursor.
  await db.schema
    .createIndex('backups_created_at_id_idx')
    .on('backups')
    .columns(['created_at', 'id'])
    .execute();
  // Retention walks succeeded backups newest first.
  await db.schema
    .createIndex('backups_status_finished_at_idx')
    .on('backups')
    .columns(['status', 'finished_at'])
    .execute();
}
