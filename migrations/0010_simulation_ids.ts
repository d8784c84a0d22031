import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * DESIGN.md §4.2: a simulation_id is unique forever, but retention pruning deletes terminal
 * simulations (SIMULATION_RETENTION_DAYS). Every id ever claimed is kept here, and the claim
 * is the insert into this table, so a pruned run's id cannot start a second run. A row is a
 * few dozen bytes; `pruned_at` says when its run was deleted.
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('simulation_ids')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('pruned_at', 'bigint')
    .addPrimaryKeyConstraint('simulation_ids_pkey', ['id'])
    .execute();
  // Every run claimed before this table existed keeps its id.
  await sql`insert into simulation_ids (id, created_at) select id, created_at from simulations`.execute(db);
}
