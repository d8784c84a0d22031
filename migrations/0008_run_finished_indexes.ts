import type { Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * Runs by finish time: pruning deletes finished probe and pruning runs older than
 * RUN_RETENTION_DAYS in batches. Probe runs grow by 2,880 a day at the default schedule, and
 * without this index each batch would scan every finished run to find the old ones.
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  for (const table of ['pruning_runs', 'probe_runs']) {
    await db.schema.createIndex(`${table}_finished_at_idx`).on(table).column('finished_at').execute();
  }
}
