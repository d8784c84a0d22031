import type { Kysely } from 'kysely';
import type { Logger } from '../logger';
import type { Database } from './schema';

/**
 * Writes shared by every table of runs: rows with a `status` that moves queued → running →
 * terminal, an `error`, a `finished_at` and the `fence` of the last single-runner holder
 * that wrote them. Each write changes the row only when `fence <= token` (DESIGN.md §4.3).
 * The stores keep their own named operations (failBackupRun, …) on top of these.
 */
export type RunTable = 'backups' | 'simulations' | 'pruning_runs' | 'probe_runs';

export type StartOutcome = 'started' | 'terminal' | 'stale-fence' | 'missing';

/**
 * queued|running → running under `fence` (started_at kept from the first attempt, error
 * cleared). A terminal run is left alone: the job is a no-op. `countAttempt` also bumps the
 * run's `attempts` column (tables that have one).
 */
export async function startFencedRun(
  db: Kysely<Database>,
  table: RunTable,
  a: { id: string; fence: number; now: number },
  opts: { countAttempt?: boolean } = {},
): Promise<StartOutcome> {
  const loose = db as Kysely<any>;
  const r = await loose
    .updateTable(table)
    .set((eb) => ({
      status: 'running',
      fence: a.fence,
      started_at: eb.fn.coalesce('started_at', eb.val(a.now)),
      error: null,
      ...(opts.countAttempt ? { attempts: eb('attempts', '+', 1) } : {}),
    }))
    .where('id', '=', a.id)
    .where('status', 'in', ['queued', 'running'])
    // Strictly newer: a start takes a fresh token, so an equal stored fence means the counter
    // was reset (Redis lost it) and another holder may still be running with that token.
    .where('fence', '<', a.fence)
    .executeTakeFirst();
  if (Number(r.numUpdatedRows) === 1) return 'started';
  const row = (await loose.selectFrom(table).select('status').where('id', '=', a.id).executeTakeFirst()) as
    { status: string } | undefined;
  if (!row) return 'missing';
  return row.status === 'queued' || row.status === 'running' ? 'stale-fence' : 'terminal';
}

/** Longest error text stored on a run. */
export const RUN_ERROR_MAX = 2000;

/** queued|running → failed (final attempt). @returns false when the run is terminal or a newer fence owns it. */
export async function failFencedRun(
  db: Kysely<Database>,
  table: RunTable,
  a: { id: string; fence: number; now: number; error: string },
): Promise<boolean> {
  // One query for the run tables, whose columns used here are the same: typed loosely inside.
  const r = await (db as Kysely<any>)
    .updateTable(table)
    .set({ status: 'failed', finished_at: a.now, error: a.error.slice(0, RUN_ERROR_MAX) })
    .where('id', '=', a.id)
    .where('status', 'in', ['queued', 'running'])
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** A failed attempt that will be retried: the run stays running with the error visible. */
export async function noteFencedRunError(
  db: Kysely<Database>,
  table: RunTable,
  a: { id: string; fence: number; error: string },
): Promise<void> {
  await (db as Kysely<any>)
    .updateTable(table)
    .set({ error: a.error.slice(0, RUN_ERROR_MAX) })
    .where('id', '=', a.id)
    .where('status', '=', 'running')
    .where('fence', '<=', a.fence)
    .execute();
}

/** What a run left `running` by a holder that is gone says about itself. */
export const ABANDONED_RUN_ERROR =
  'abandoned: its worker stopped without finishing it (a later run took the lock); nothing more will run for it';

/**
 * Runs of a single-runner scope (pruning, probes) that still say `running` while the caller
 * holds that scope's lock cannot be running: their holder died, or its last write was lost
 * (a scheduled run whose tick failed while the database was away). Marks them failed, fenced
 * below the caller's token, and logs the transition. Queued runs are left alone: they wait
 * for their turn.
 * @returns the ids marked failed
 */
export async function failAbandonedRuns(
  db: Kysely<Database>,
  table: 'pruning_runs' | 'probe_runs',
  a: { exceptId: string; fence: number; now: number },
  log: Logger,
): Promise<string[]> {
  const rows = (await (db as Kysely<any>)
    .updateTable(table)
    .set({ status: 'failed', finished_at: a.now, error: ABANDONED_RUN_ERROR })
    .where('status', '=', 'running')
    .where('id', '!=', a.exceptId)
    .where('fence', '<', a.fence)
    .returning('id')
    .execute()) as Array<{ id: string }>;
  const ids = rows.map((r) => r.id);
  if (ids.length > 0) {
    const kind = table === 'pruning_runs' ? 'pruning' : 'probe';
    log.info({ run_ids: ids, status: 'failed' }, `earlier ${kind} runs left running were marked failed`);
  }
  return ids;
}
