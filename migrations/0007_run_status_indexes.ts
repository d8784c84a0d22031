import type { Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * Runs by status: every probe cycle (each 30 s) and pruning run marks the runs of its kind left
 * `running` as failed (failAbandonedRuns), and the reconciler lists unfinished manual runs each
 * minute. Without an index both scanned the whole table, which grows by 2,880 probe runs a day
 * and is not pruned; on SQLite that scan ran inside the UPDATE's write lock.
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  for (const table of ['pruning_runs', 'probe_runs']) {
    await db.schema.createIndex(`${table}_status_idx`).on(table).column('status').execute();
  }
}
