import type { Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * GET /v1/pruning/runs and GET /v1/probes/runs page newest first by (created_at, id), like the
 * other lists: the same two-column index replaces the created_at-only one (probe cycles add
 * 2,880 rows a day at the default 30 s).
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  for (const table of ['pruning_runs', 'probe_runs']) {
    await db.schema
      .createIndex(`${table}_created_at_id_idx`)
      .on(table)
      .columns(['created_at', 'id'])
      .execute();
    await db.schema.dropIndex(`${table}_created_at_idx`).execute();
  }
}
