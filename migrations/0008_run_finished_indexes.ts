import type { Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * Finished runs by finish time: pruning deletes probe and pruning runs that finished more than
 * RUN_RETENTION_DAYS ago, in batches (`status IN (finished) AND finished_at < cutoff`). Probe
 * runs grow by 2,880 a day at the default schedule. Status first, so that SQLite, which has no
 * statistics unless ANALYZE runs, prefers this index to the status-only one from 0007: with a
 * finished_at-only index it still chose the status index and scanned every finished run.
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  for (const table of ['pruning_runs', 'probe_runs']) {
    await db.schema
      .createIndex(`${table}_status_finished_at_idx`)
      .on(table)
      .columns(['status', 'finished_at'])
      .execute();
  }
}
