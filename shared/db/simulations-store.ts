import type { Kysely, Selectable } from 'kysely';
import type { Database, SimulationCheckpointsTable, SimulationStatus, SimulationsTable } from './schema';
import { failFencedRun, noteFencedRunError } from './fenced-run';
import { newestFirst, oldestFirst, type KeysetAfter } from './newest-first';

/**
 * Simulations and their checkpoints (DESIGN.md §4.2, §4.3).
 *
 * The claim of a simulation_id is the insert itself (`ON CONFLICT DO NOTHING` on the
 * primary key of `simulation_ids`, which keeps every id ever claimed, also after retention
 * pruning deleted its run), never a read followed by a write. Every worker write is fenced: it changes
 * a row only when the stored `fence <= token` (and stores the token), so a holder that lost
 * its lock without noticing changes nothing.
 */

export type SimulationRow = Selectable<SimulationsTable>;
export type SimulationCheckpointRow = Selectable<SimulationCheckpointsTable>;

export const TERMINAL_SIMULATION_STATUSES: readonly SimulationStatus[] = ['succeeded', 'failed', 'cancelled'];

export const isTerminalSimulation = (status: SimulationStatus) =>
  TERMINAL_SIMULATION_STATUSES.includes(status);

/**
 * Claim a simulation_id: insert the queued row unless this id was ever claimed. Call inside
 * a transaction: the id's registry row and the run are written together.
 * @returns the new row, or undefined when the id was taken (by this or any earlier request,
 * whether its run is still kept or was pruned).
 */
export async function insertSimulationIfAbsent(
  db: Kysely<Database>,
  s: { id: string; scenarioJson: string; createdBy: string | null; now: number },
): Promise<SimulationRow | undefined> {
  const row: SimulationRow = {
    id: s.id,
    status: 'queued',
    scenario: s.scenarioJson,
    progress_bp: 0,
    result: null,
    error: null,
    attempts: 0,
    fence: 0,
    cancel_requested_at: null,
    elapsed_ms: null,
    events: null,
    created_by: s.createdBy,
    created_at: s.now,
    started_at: null,
    finished_at: null,
  };
  const claim = await db
    .insertInto('simulation_ids')
    .values({ id: s.id, created_at: s.now, pruned_at: null })
    .onConflict((oc) => oc.column('id').doNothing())
    .executeTakeFirst();
  if (Number(claim.numInsertedOrUpdatedRows ?? 0) !== 1) return undefined;
  // A run can exist without its id's row: one restored from an archive older than
  // simulation_ids into an already-migrated database, or one an api of the previous version
  // created during a rolling upgrade. Its id is taken all the same.
  const run = await db
    .insertInto('simulations')
    .values(row)
    .onConflict((oc) => oc.column('id').doNothing())
    .executeTakeFirst();
  return Number(run.numInsertedOrUpdatedRows ?? 0) === 1 ? row : undefined;
}

/**
 * The record of a claimed simulation_id whose run is no longer kept: `prunedAt` is when
 * retention pruning deleted it (null when that was not recorded, by an older version).
 * @returns undefined when the id was never claimed
 */
export async function getClaimedSimulationId(
  db: Kysely<Database>,
  id: string,
): Promise<{ prunedAt: number | null } | undefined> {
  const r = await db.selectFrom('simulation_ids').select('pruned_at').where('id', '=', id).executeTakeFirst();
  return r && { prunedAt: r.pruned_at === null ? null : Number(r.pruned_at) };
}

export async function getSimulation(db: Kysely<Database>, id: string): Promise<SimulationRow | undefined> {
  return db.selectFrom('simulations').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Newest first, optionally of one status; `after` is the (created_at, id) of the previous page's last row. */
export async function listSimulations(
  db: Kysely<Database>,
  opts: { limit: number; status?: SimulationStatus; after?: { createdAt: number; id: string } },
): Promise<SimulationRow[]> {
  let q = db.selectFrom('simulations').selectAll();
  if (opts.status) q = q.where('status', '=', opts.status);
  return newestFirst(q, opts).execute();
}

export type CancelOutcome =
  | { outcome: 'cancelled' | 'requested'; row: SimulationRow }
  | { outcome: 'terminal'; row: SimulationRow }
  | { outcome: 'missing' };

/**
 * Ask a run to stop, in one statement: a queued run becomes `cancelled` at once; a running
 * one gets `cancel_requested_at` and its worker ends it. The first request's time is kept.
 */
export async function requestSimulationCancel(
  db: Kysely<Database>,
  a: { id: string; now: number },
): Promise<CancelOutcome> {
  const row = await db
    .updateTable('simulations')
    .set((eb) => ({
      cancel_requested_at: eb.fn.coalesce('cancel_requested_at', eb.val(a.now)),
      status: eb
        .case()
        .when('status', '=', 'queued')
        .then(eb.val<SimulationStatus>('cancelled'))
        .else(eb.ref('status'))
        .end(),
      finished_at: eb
        .case()
        .when('status', '=', 'queued')
        .then(eb.val<number | null>(a.now))
        .else(eb.ref('finished_at'))
        .end(),
    }))
    .where('id', '=', a.id)
    .where('status', 'in', ['queued', 'running'])
    .returningAll()
    .executeTakeFirst();
  if (row) return { outcome: row.status === 'cancelled' ? 'cancelled' : 'requested', row };
  const existing = await getSimulation(db, a.id);
  if (!existing) return { outcome: 'missing' };
  return { outcome: 'terminal', row: existing };
}

export type SimulationStartOutcome =
  | { outcome: 'started'; row: SimulationRow }
  | { outcome: 'terminal' | 'cancel-requested' | 'stale-fence'; row: SimulationRow }
  | { outcome: 'missing' };

/**
 * queued|running → running under `fence`, attempts + 1, progress set to where the run
 * resumes from. A terminal row, or one whose cancel was requested, is left alone.
 */
export async function startSimulationRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number; progressBp: number },
): Promise<SimulationStartOutcome> {
  const row = await db
    .updateTable('simulations')
    .set((eb) => ({
      status: 'running',
      fence: a.fence,
      started_at: eb.fn.coalesce('started_at', eb.val(a.now)),
      attempts: eb('attempts', '+', 1),
      progress_bp: a.progressBp,
      error: null,
    }))
    .where('id', '=', a.id)
    .where('status', 'in', ['queued', 'running'])
    .where('cancel_requested_at', 'is', null)
    // Strictly newer, as in startFencedRun: an equal token after a counter reset is stale.
    .where('fence', '<', a.fence)
    .returningAll()
    .executeTakeFirst();
  if (row) return { outcome: 'started', row };
  const existing = await getSimulation(db, a.id);
  if (!existing) return { outcome: 'missing' };
  if (isTerminalSimulation(existing.status)) return { outcome: 'terminal', row: existing };
  if (Number(existing.fence) >= a.fence) return { outcome: 'stale-fence', row: existing };
  return { outcome: 'cancel-requested', row: existing };
}

/**
 * Record progress of a running run and read back whether a cancel was requested, in one
 * round trip. @returns undefined when a newer fence owns the row or the run is no longer
 * running (the holder must stop), else the cancel request time (null when none).
 */
export async function recordSimulationProgress(
  db: Kysely<Database>,
  a: { id: string; fence: number; progressBp: number },
): Promise<{ cancelRequestedAt: number | null } | undefined> {
  const row = await db
    .updateTable('simulations')
    .set({ progress_bp: a.progressBp })
    .where('id', '=', a.id)
    .where('status', '=', 'running')
    .where('fence', '<=', a.fence)
    .returning(['cancel_requested_at'])
    .executeTakeFirst();
  if (!row) return undefined;
  return { cancelRequestedAt: row.cancel_requested_at === null ? null : Number(row.cancel_requested_at) };
}

export async function getSimulationCheckpoint(
  db: Kysely<Database>,
  simulationId: string,
): Promise<SimulationCheckpointRow | undefined> {
  return db
    .selectFrom('simulation_checkpoints')
    .selectAll()
    .where('simulation_id', '=', simulationId)
    .executeTakeFirst();
}

/**
 * Store a checkpoint under `fence`, in one transaction: the run's row must still be running
 * under a fence ≤ ours (its progress and accumulated compute time are updated), and the
 * checkpoint replaces the stored one only when that one's fence ≤ ours.
 * @returns false when either write changed no row: a newer holder exists (nothing is kept).
 */
export async function saveSimulationCheckpoint(
  db: Kysely<Database>,
  c: {
    simulationId: string;
    fence: number;
    stateJson: string;
    progressBp: number;
    events: number;
    elapsedMs: number;
    now: number;
  },
): Promise<boolean> {
  return db
    .transaction()
    .execute(async (trx) => {
      // The row first: on SQLite a transaction that writes first takes the write lock at once.
      const run = await trx
        .updateTable('simulations')
        .set({ progress_bp: c.progressBp, elapsed_ms: c.elapsedMs })
        .where('id', '=', c.simulationId)
        .where('status', '=', 'running')
        .where('fence', '<=', c.fence)
        .executeTakeFirst();
      if (Number(run.numUpdatedRows) !== 1) return false;
      const written = await upsertSimulationCheckpoint(trx, c);
      if (!written) throw new StaleCheckpointRollback();
      return true;
    })
    .catch((err: unknown) => {
      if (err instanceof StaleCheckpointRollback) return false;
      throw err;
    });
}

/** Thrown inside the checkpoint transaction only to roll it back. */
class StaleCheckpointRollback extends Error {}

/**
 * The fenced checkpoint upsert alone: insert, or replace the stored checkpoint when its
 * fence ≤ ours. @returns false when a newer holder's checkpoint is stored (0 rows changed).
 */
export async function upsertSimulationCheckpoint(
  db: Kysely<Database>,
  c: {
    simulationId: string;
    fence: number;
    stateJson: string;
    progressBp: number;
    events: number;
    now: number;
  },
): Promise<boolean> {
  const values = {
    simulation_id: c.simulationId,
    fence: c.fence,
    state: c.stateJson,
    progress_bp: c.progressBp,
    events: c.events,
    saved_at: c.now,
  };
  const r = await db
    .insertInto('simulation_checkpoints')
    .values(values)
    .onConflict((oc) =>
      oc
        .column('simulation_id')
        .doUpdateSet((eb) => ({
          fence: eb.ref('excluded.fence'),
          state: eb.ref('excluded.state'),
          progress_bp: eb.ref('excluded.progress_bp'),
          events: eb.ref('excluded.events'),
          saved_at: eb.ref('excluded.saved_at'),
        }))
        .where('simulation_checkpoints.fence', '<=', c.fence),
    )
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0) === 1;
}

/** running → succeeded with the result and the run figures. @returns false when a newer fence owns the row. */
export async function completeSimulationRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number; resultJson: string; elapsedMs: number; events: number },
): Promise<boolean> {
  const r = await db
    .updateTable('simulations')
    .set({
      status: 'succeeded',
      result: a.resultJson,
      progress_bp: 10_000,
      elapsed_ms: a.elapsedMs,
      events: a.events,
      finished_at: a.now,
      error: null,
    })
    .where('id', '=', a.id)
    .where('status', '=', 'running')
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** queued|running → cancelled (the worker saw the request). @returns false when a newer fence owns the row. */
export async function markSimulationCancelled(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number },
): Promise<boolean> {
  const r = await db
    .updateTable('simulations')
    .set({ status: 'cancelled', finished_at: a.now })
    .where('id', '=', a.id)
    .where('status', 'in', ['queued', 'running'])
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** queued|running → failed (final attempt). @returns false when a newer fence owns the row. */
export function failSimulationRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number; error: string },
): Promise<boolean> {
  return failFencedRun(db, 'simulations', a);
}

/** A failed attempt that will be retried: the row stays running with the error visible. */
export function noteSimulationAttemptError(
  db: Kysely<Database>,
  a: { id: string; fence: number; error: string },
): Promise<void> {
  return noteFencedRunError(db, 'simulations', a);
}

/** Resources the reconciler checks: not terminal, older than `createdBefore`. */
export async function listUnfinishedSimulations(
  db: Kysely<Database>,
  opts: { createdBefore: number; limit: number; after?: KeysetAfter },
): Promise<Array<Pick<SimulationRow, 'id' | 'created_at' | 'status'>>> {
  return oldestFirst(
    db
      .selectFrom('simulations')
      .select(['id', 'created_at', 'status'])
      .where('status', 'in', ['queued', 'running'])
      .where('created_at', '<=', opts.createdBefore),
    opts,
  ).execute();
}
