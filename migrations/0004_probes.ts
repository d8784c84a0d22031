import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/** Health probes (issue 5): providers, their samples, state transitions and probe runs. Booleans are 0/1 integers. */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('providers')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('url', 'text', (c) => c.notNull())
    .addColumn('method', 'text', (c) => c.notNull().check(sql`method in ('GET', 'HEAD')`))
    .addColumn('expected_status_min', 'integer', (c) => c.notNull())
    .addColumn('expected_status_max', 'integer', (c) => c.notNull())
    .addColumn('timeout_ms', 'integer', (c) => c.notNull())
    .addColumn('headers', 'text')
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('state', 'text', (c) =>
      c.notNull().check(sql`state in ('unknown', 'healthy', 'degraded', 'down')`),
    )
    .addColumn('state_since', 'bigint', (c) => c.notNull())
    .addColumn('consecutive_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('consecutive_successes', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_checked_at', 'bigint')
    .addColumn('last_latency_ms', 'integer')
    .addColumn('fence', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('providers_pkey', ['id'])
    .execute();
  await db.schema.createIndex('providers_name_unique').on('providers').column('name').unique().execute();
  await db.schema
    .createIndex('providers_created_at_id_idx')
    .on('providers')
    .columns(['created_at', 'id'])
    .execute();

  await db.schema
    .createTable('probe_samples')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('provider_id', 'text', (c) => c.notNull())
    .addColumn('run_id', 'text')
    .addColumn('ok', 'integer', (c) => c.notNull())
    .addColumn('status_code', 'integer')
    .addColumn('latency_ms', 'integer', (c) => c.notNull())
    .addColumn('error_class', 'text')
    .addColumn('checked_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('probe_samples_pkey', ['id'])
    .execute();
  await db.schema
    .createIndex('probe_samples_provider_id_checked_at_idx')
    .on('probe_samples')
    .columns(['provider_id', 'checked_at'])
    .execute();
  // Pruning deletes old samples by time.
  await db.schema
    .createIndex('probe_samples_checked_at_idx')
    .on('probe_samples')
    .column('checked_at')
    .execute();

  await db.schema
    .createTable('provider_transitions')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('provider_id', 'text', (c) => c.notNull())
    .addColumn('from_state', 'text', (c) => c.notNull())
    .addColumn('to_state', 'text', (c) => c.notNull())
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('provider_transitions_pkey', ['id'])
    .execute();
  await db.schema
    .createIndex('provider_transitions_provider_id_at_idx')
    .on('provider_transitions')
    .columns(['provider_id', 'at'])
    .execute();

  await db.schema
    .createTable('probe_runs')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('trigger', 'text', (c) => c.notNull().check(sql`trigger in ('manual', 'scheduled')`))
    .addColumn('status', 'text', (c) =>
      c.notNull().check(sql`status in ('queued', 'running', 'succeeded', 'failed', 'skipped')`),
    )
    .addColumn('probed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('failed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('error', 'text')
    .addColumn('fence', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addPrimaryKeyConstraint('probe_runs_pkey', ['id'])
    .execute();
  await db.schema.createIndex('probe_runs_created_at_idx').on('probe_runs').column('created_at').execute();
}
