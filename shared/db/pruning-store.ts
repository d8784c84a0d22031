import type { ExpressionBuilder, Kysely, Selectable } from 'kysely';
import type { Database, PruningRunsTable } from './schema';
import { failFencedRun, noteFencedRunError, startFencedRun, type StartOutcome } from './fenced-run';
import { newestFirst, oldestFirst, type KeysetAfter } from './newest-first';

/**
 * Retention pruning (issue 5): one batched delete and one count per kind of expired row, and
 * the pruning_runs repository. Each batch deletes at most `limit` rows chosen by a
 * `pk IN (SELECT pk … LIMIT n)` subquery, so a batch is self-contained: a run interrupted
 * between batches leaves nothing half-done, and the next run simply finds fewer rows.
 * Run-row writes by a worker are fenced on the `pruning` token (`fence <= token`).
 */

/** The kinds a run prunes, in the order it prunes them. */
export const PRUNE_KINDS = [
  'idempotency_keys',
  'outbox',
  'probe_samples',
  'probe_runs',
  'pruning_runs',
  'simulations',
  'simulation_checkpoints',
  'backups',
  'backup_files',
  'jobs',
] as const;

export type PruneKind = (typeof PRUNE_KINDS)[number];
/** Rows (files, jobs) deleted per kind, or that would be for a dry run. */
export type PruneCounts = Record<PruneKind, number>;

export function emptyPruneCounts(): PruneCounts {
  return Object.fromEntries(PRUNE_KINDS.map((k) => [k, 0])) as PruneCounts;
}

/** Stored counts JSON → counts; unknown keys dropped, missing ones 0. */
export function parsePruneCounts(text: string | null): PruneCounts {
  const counts = emptyPruneCounts();
  if (text === null) return counts;
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    for (const k of PRUNE_KINDS) if (typeof v[k] === 'number') counts[k] = v[k];
  } catch {
    // An unreadable value counts as nothing done yet.
  }
  return counts;
}

const TERMINAL_SIMULATION = ['succeeded', 'failed', 'cancelled'] as const;

const countOf = (r: { n: number | string | bigint } | undefined) => Number(r?.n ?? 0);

// ---- idempotency records: expired (expires_at <= now), never a still-valid in-flight lease

/** Delete up to `limit` expired idempotency records. @returns rows deleted */
export async function deleteExpiredIdempotencyBatch(
  db: Kysely<Database>,
  now: number,
  limit: number,
): Promise<number> {
  const r = await db
    .deleteFrom('idempotency_keys')
    .where(({ eb, refTuple, selectFrom }) =>
      eb(
        refTuple('principal_id', 'key'),
        'in',
        selectFrom('idempotency_keys')
          .select(['principal_id', 'key'])
          .where((w) => expiredIdempotency(w, now))
          .limit(limit)
          .$asTuple('principal_id', 'key'),
      ),
    )
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

export async function countExpiredIdempotency(db: Kysely<Database>, now: number): Promise<number> {
  return countOf(
    await db
      .selectFrom('idempotency_keys')
      .select((eb) => eb.fn.countAll().as('n'))
      .where((w) => expiredIdempotency(w, now))
      .executeTakeFirst(),
  );
}

function expiredIdempotency(eb: ExpressionBuilder<Database, 'idempotency_keys'>, now: number) {
  // A record past expires_at counts as absent (DESIGN.md §4.1); a lease still running is kept
  // so its holder can complete it.
  return eb.and([
    eb('expires_at', '<=', now),
    eb.or([
      eb('state', '!=', 'in_flight'),
      eb('lease_expires_at', 'is', null),
      eb('lease_expires_at', '<=', now),
    ]),
  ]);
}

// ---- outbox: dispatched rows created before `before`

export async function deleteDispatchedOutboxBatch(
  db: Kysely<Database>,
  before: number,
  limit: number,
): Promise<number> {
  const r = await db
    .deleteFrom('outbox')
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('outbox')
        .select('id')
        .where('created_at', '<', before)
        .where('dispatched_at', 'is not', null)
        .limit(limit),
    )
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

export async function countDispatchedOutbox(db: Kysely<Database>, before: number): Promise<number> {
  return countOf(
    await db
      .selectFrom('outbox')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('created_at', '<', before)
      .where('dispatched_at', 'is not', null)
      .executeTakeFirst(),
  );
}

// ---- probe samples checked before `before`

export async function deleteProbeSamplesBatch(
  db: Kysely<Database>,
  before: number,
  limit: number,
): Promise<number> {
  const r = await db
    .deleteFrom('probe_samples')
    .where('id', 'in', (eb) =>
      eb.selectFrom('probe_samples').select('id').where('checked_at', '<', before).limit(limit),
    )
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

export async function countProbeSamples(db: Kysely<Database>, before: number): Promise<number> {
  return countOf(
    await db
      .selectFrom('probe_samples')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('checked_at', '<', before)
      .executeTakeFirst(),
  );
}

// ---- probe runs and pruning runs finished before `before`

const FINISHED_RUN = ['succeeded', 'failed', 'skipped'] as const;

/**
 * Delete up to `limit` probe or pruning runs that finished before `before`. Queued and running
 * runs are never touched, so the run doing the pruning keeps its own row.
 */
export async function deleteFinishedRunsBatch(
  db: Kysely<Database>,
  table: 'probe_runs' | 'pruning_runs',
  before: number,
  limit: number,
): Promise<number> {
  const r = await db
    .deleteFrom(table)
    .where('id', 'in', (eb) =>
      eb
        .selectFrom(table)
        .select('id')
        .where('finished_at', '<', before)
        .where('status', 'in', FINISHED_RUN)
        .limit(limit),
    )
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

export async function countFinishedRuns(
  db: Kysely<Database>,
  table: 'probe_runs' | 'pruning_runs',
  before: number,
): Promise<number> {
  return countOf(
    await db
      .selectFrom(table)
      .select((eb) => eb.fn.countAll().as('n'))
      .where('finished_at', '<', before)
      .where('status', 'in', FINISHED_RUN)
      .executeTakeFirst(),
  );
}

// ---- terminal simulations finished before `before`, with their checkpoints

/**
 * Delete up to `limit` terminal simulations finished before `before`, and their checkpoints.
 * Their ids stay claimed (`simulation_ids`, stamped `pruned_at = now`): an id is never reused.
 * Call inside a transaction so a simulation never outlives or loses its checkpoint alone.
 * The simulations are deleted first (a write first: on SQLite a read-then-write transaction
 * can fail with SQLITE_BUSY at once), returning the ids whose checkpoints follow.
 */
export async function deleteFinishedSimulationsBatch(
  trx: Kysely<Database>,
  before: number,
  limit: number,
  now: number,
): Promise<{ ids: string[]; simulations: number; checkpoints: number }> {
  const deleted = await trx
    .deleteFrom('simulations')
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('simulations')
        .select('id')
        .where('status', 'in', TERMINAL_SIMULATION)
        .where('finished_at', '<', before)
        .limit(limit),
    )
    .returning(['id', 'created_at'])
    .execute();
  const ids = deleted.map((r) => r.id);
  if (ids.length === 0) return { ids, simulations: 0, checkpoints: 0 };
  // An upsert: a run that never had its id's row (see insertSimulationIfAbsent) gets one now,
  // or its id would be free again.
  await trx
    .insertInto('simulation_ids')
    .values(deleted.map((r) => ({ id: r.id, created_at: Number(r.created_at), pruned_at: now })))
    .onConflict((oc) => oc.column('id').doUpdateSet({ pruned_at: now }))
    .execute();
  const r = await trx
    .deleteFrom('simulation_checkpoints')
    .where('simulation_id', 'in', ids)
    .executeTakeFirst();
  return { ids, simulations: ids.length, checkpoints: Number(r.numDeletedRows) };
}

export async function countFinishedSimulations(
  db: Kysely<Database>,
  before: number,
): Promise<{ simulations: number; checkpoints: number }> {
  const old = (eb: Kysely<Database>) =>
    eb
      .selectFrom('simulations')
      .select('id')
      .where('status', 'in', TERMINAL_SIMULATION)
      .where('finished_at', '<', before);
  const simulations = countOf(
    await db
      .selectFrom('simulations')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('status', 'in', TERMINAL_SIMULATION)
      .where('finished_at', '<', before)
      .executeTakeFirst(),
  );
  const checkpoints = countOf(
    await db
      .selectFrom('simulation_checkpoints')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('simulation_id', 'in', old(db))
      .executeTakeFirst(),
  );
  return { simulations, checkpoints };
}

// ---- backups (deleted one by one with their files by the backups processor's retention)

/** Succeeded backups beyond the newest `keep`. */
export async function countSucceededBackupsBeyond(db: Kysely<Database>, keep: number): Promise<number> {
  const n = countOf(
    await db
      .selectFrom('backups')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('status', '=', 'succeeded')
      .executeTakeFirst(),
  );
  return Math.max(0, n - keep);
}

// ---- pruning_runs

export type PruningRunRow = Selectable<PruningRunsTable>;

export async function insertPruningRun(
  db: Kysely<Database>,
  r: { id: string; trigger: 'manual' | 'scheduled'; dryRun: boolean; now: number },
): Promise<PruningRunRow> {
  const row: PruningRunRow = {
    id: r.id,
    trigger: r.trigger,
    dry_run: r.dryRun ? 1 : 0,
    status: 'queued',
    counts: null,
    error: null,
    fence: 0,
    created_at: r.now,
    started_at: null,
    finished_at: null,
  };
  await db.insertInto('pruning_runs').values(row).execute();
  return row;
}

/** Insert unless a run with this id exists (scheduled runs: one row per scheduler tick). */
export async function insertPruningRunIfAbsent(
  db: Kysely<Database>,
  r: { id: string; trigger: 'manual' | 'scheduled'; dryRun: boolean; now: number },
): Promise<void> {
  await db
    .insertInto('pruning_runs')
    .values({ id: r.id, trigger: r.trigger, dry_run: r.dryRun ? 1 : 0, status: 'queued', created_at: r.now })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
}

/** Pruning runs, newest first (GET /v1/pruning/runs). */
export async function listPruningRuns(
  db: Kysely<Database>,
  opts: { limit: number; after?: KeysetAfter },
): Promise<PruningRunRow[]> {
  return newestFirst(db.selectFrom('pruning_runs').selectAll(), opts).execute();
}

export async function getPruningRun(db: Kysely<Database>, id: string): Promise<PruningRunRow | undefined> {
  return db.selectFrom('pruning_runs').selectAll().where('id', '=', id).executeTakeFirst();
}

export type PruningStartOutcome = StartOutcome;

/**
 * queued|running → running under `fence`. A retried run keeps the counts it stored so far.
 * A terminal row is left alone (the job is a no-op).
 */
export function startPruningRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number },
): Promise<PruningStartOutcome> {
  return startFencedRun(db, 'pruning_runs', a);
}

/** Store the counts so far (call in the batch's transaction). @returns false when a newer fence owns the row. */
export async function recordPruningProgress(
  db: Kysely<Database>,
  a: { id: string; fence: number; counts: PruneCounts },
): Promise<boolean> {
  const r = await db
    .updateTable('pruning_runs')
    .set({ counts: JSON.stringify(a.counts) })
    .where('id', '=', a.id)
    .where('status', '=', 'running')
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** running → succeeded with the final counts. @returns false when a newer fence owns the row. */
export async function completePruningRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number; counts: PruneCounts },
): Promise<boolean> {
  const r = await db
    .updateTable('pruning_runs')
    .set({ status: 'succeeded', finished_at: a.now, counts: JSON.stringify(a.counts), error: null })
    .where('id', '=', a.id)
    .where('status', '=', 'running')
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** queued|running → failed (final attempt). @returns false when a newer fence owns the row. */
export function failPruningRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number; error: string },
): Promise<boolean> {
  return failFencedRun(db, 'pruning_runs', a);
}

/** A failed attempt that will be retried: the row stays running with the error visible. */
export function notePruningAttemptError(
  db: Kysely<Database>,
  a: { id: string; fence: number; error: string },
): Promise<void> {
  return noteFencedRunError(db, 'pruning_runs', a);
}

/**
 * queued → skipped: the `pruning` scope was busy (another run is pruning the same rows).
 * Unfenced: the run never held the scope. @returns false when the row was not queued.
 */
export async function skipPruningRun(db: Kysely<Database>, a: { id: string; now: number }): Promise<boolean> {
  const r = await db
    .updateTable('pruning_runs')
    .set({ status: 'skipped', finished_at: a.now })
    .where('id', '=', a.id)
    .where('status', '=', 'queued')
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Manual runs not finished and older than `createdBefore`, for the reconciler. */
export async function listUnfinishedManualPruningRuns(
  db: Kysely<Database>,
  opts: { createdBefore: number; limit: number; after?: KeysetAfter },
): Promise<Array<{ id: string; created_at: number; status: string; dry_run: number; fence: number }>> {
  return oldestFirst(
    db
      .selectFrom('pruning_runs')
      .select(['id', 'created_at', 'status', 'dry_run', 'fence'])
      .where('trigger', '=', 'manual')
      .where('status', 'in', ['queued', 'running'])
      .where('created_at', '<=', opts.createdBefore),
    opts,
  ).execute();
}
