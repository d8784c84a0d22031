import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * Simulations (issue 4). The row's primary key is the client-chosen simulation_id: the
 * claim is the insert itself (DESIGN.md §4.2). One checkpoint row per simulation, replaced
 * under the fencing token of the holder of `simulation:<id>`.
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('simulations')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) =>
      c.notNull().check(sql`status in ('queued', 'running', 'succeeded', 'failed', 'cancelled')`),
    )
    // The resolved scenario (seed included), canonical JSON.
    .addColumn('scenario', 'text', (c) => c.notNull())
    // Progress in basis points (0..10000): integers compare exactly on both dialects.
    .addColumn('progress_bp', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('result', 'text')
    .addColumn('error', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('fence', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('cancel_requested_at', 'bigint')
    // Wall-clock figures belong on the run, never in the (deterministic) result.
    .addColumn('elapsed_ms', 'bigint')
    .addColumn('events', 'bigint')
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addPrimaryKeyConstraint('simulations_pkey', ['id'])
    .execute();
  await db.schema
    .createIndex('simulations_created_at_id_idx')
    .on('simulations')
    .columns(['created_at', 'id'])
    .execute();
  await db.schema
    .createIndex('simulations_status_created_at_id_idx')
    .on('simulations')
    .columns(['status', 'created_at', 'id'])
    .execute();

  await db.schema
    .createTable('simulation_checkpoints')
    .addColumn('simulation_id', 'text', (c) => c.notNull())
    .addColumn('fence', 'bigint', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('progress_bp', 'integer', (c) => c.notNull())
    .addColumn('events', 'bigint', (c) => c.notNull())
    .addColumn('saved_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('simulation_checkpoints_pkey', ['simulation_id'])
    .execute();
}
