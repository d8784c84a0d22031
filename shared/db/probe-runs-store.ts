import type { Kysely, Selectable } from 'kysely';
import type { ProbeRunsTable, Database } from './schema';
import { startFencedRun, type StartOutcome } from './fenced-run';
import { newestFirst, oldestFirst, type KeysetAfter } from './newest-first';

/**
 * Probe runs: one row per probe cycle, manual (POST /v1/probes/runs) or scheduled. The
 * cycle's writes are fenced on the `probes` token: they change a row only when
 * `fence <= token`.
 */

export type ProbeRunRow = Selectable<ProbeRunsTable>;

export async function insertProbeRun(
  db: Kysely<Database>,
  r: { id: string; trigger: 'manual' | 'scheduled'; now: number },
): Promise<ProbeRunRow> {
  const row: ProbeRunRow = {
    id: r.id,
    trigger: r.trigger,
    status: 'queued',
    probed: 0,
    failed: 0,
    error: null,
    fence: 0,
    created_at: r.now,
    started_at: null,
    finished_at: null,
  };
  await db.insertInto('probe_runs').values(row).execute();
  return row;
}

/** Insert unless a run with this id exists (scheduled cycles: one row per scheduler tick). */
export async function insertProbeRunIfAbsent(
  db: Kysely<Database>,
  r: { id: string; trigger: 'manual' | 'scheduled'; now: number },
): Promise<void> {
  await db
    .insertInto('probe_runs')
    .values({ id: r.id, trigger: r.trigger, status: 'queued', created_at: r.now })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
}

/** Probe cycles, newest first (GET /v1/probes/runs). */
export async function listProbeRuns(
  db: Kysely<Database>,
  opts: { limit: number; after?: KeysetAfter },
): Promise<ProbeRunRow[]> {
  return newestFirst(db.selectFrom('probe_runs').selectAll(), opts).execute();
}

export async function getProbeRun(db: Kysely<Database>, id: string): Promise<ProbeRunRow | undefined> {
  return db.selectFrom('probe_runs').selectAll().where('id', '=', id).executeTakeFirst();
}

export type ProbeRunStartOutcome = StartOutcome;

/** queued|running → running under `fence`. A terminal row is left alone (the cycle is a no-op). */
export function startProbeRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number },
): Promise<ProbeRunStartOutcome> {
  return startFencedRun(db, 'probe_runs', a);
}

/** running → succeeded | failed with the counts. @returns false when a newer fence owns the row. */
export async function finishProbeRun(
  db: Kysely<Database>,
  a: {
    id: string;
    fence: number;
    now: number;
    status: 'succeeded' | 'failed';
    probed: number;
    failed: number;
    error: string | null;
  },
): Promise<boolean> {
  const r = await db
    .updateTable('probe_runs')
    .set({
      status: a.status,
      probed: a.probed,
      failed: a.failed,
      error: a.error === null ? null : a.error.slice(0, 2000),
      finished_at: a.now,
    })
    .where('id', '=', a.id)
    .where('status', '=', 'running')
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/**
 * queued → skipped: the cycle found the `probes` scope held. It holds no token, so only a
 * run nobody started is marked. @returns whether the row changed.
 */
export async function skipProbeRun(db: Kysely<Database>, a: { id: string; now: number }): Promise<boolean> {
  const r = await db
    .updateTable('probe_runs')
    .set({ status: 'skipped', finished_at: a.now })
    .where('id', '=', a.id)
    .where('status', '=', 'queued')
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Manual runs not finished and older than `createdBefore`, for the reconciler. */
export async function listUnfinishedManualProbeRuns(
  db: Kysely<Database>,
  opts: { createdBefore: number; limit: number; after?: KeysetAfter },
): Promise<Array<{ id: string; created_at: number; status: string; fence: number }>> {
  return oldestFirst(
    db
      .selectFrom('probe_runs')
      .select(['id', 'created_at', 'status', 'fence'])
      .where('trigger', '=', 'manual')
      .where('status', 'in', ['queued', 'running'])
      .where('created_at', '<=', opts.createdBefore),
    opts,
  ).execute();
}
