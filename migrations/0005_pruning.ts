import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/** Retention pruning runs (issue 5): status and the count deleted per kind (JSON). */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('pruning_runs')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('trigger', 'text', (c) => c.notNull().check(sql`trigger in ('manual', 'scheduled')`))
    .addColumn('dry_run', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('status', 'text', (c) =>
      c.notNull().check(sql`status in ('queued', 'running', 'succeeded', 'failed', 'skipped')`),
    )
    .addColumn('counts', 'text')
    .addColumn('error', 'text')
    .addColumn('fence', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addPrimaryKeyConstraint('pruning_runs_pkey', ['id'])
    .execute();
  await db.schema
    .createIndex('pruning_runs_created_at_idx')
    .on('pruning_runs')
    .column('created_at')
    .execute();
  // Pruning deletes dispatched outbox rows by age.
  await db.schema.createIndex('outbox_created_at_idx').on('outbox').column('created_at').execute();
  // Terminal simulations by age.
  await db.schema
    .createIndex('simulations_finished_at_idx')
    .on('simulations')
    .column('finished_at')
    .execute();
}
