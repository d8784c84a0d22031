import { randomUUID } from 'node:crypto';
import { sql, type Kysely, type Selectable, type Updateable } from 'kysely';
import { StaleFenceError } from '../errors';
import type { ProbeErrorClass } from '../http-probe';
import type {
  ProbeSamplesTable,
  ProviderState,
  ProvidersTable,
  ProviderTransitionsTable,
  Database,
} from './schema';
import { newestFirst } from './newest-first';

/**
 * Probe targets (providers), their samples and state transitions. Configuration is written
 * by the api; health (state, counters, last check) only by the holder of the `probes` scope,
 * fenced: a write changes a provider only when `fence <= token`.
 */

export type ProviderRow = Selectable<ProvidersTable>;
export type ProbeSampleRow = Selectable<ProbeSamplesTable>;
export type ProviderTransitionRow = Selectable<ProviderTransitionsTable>;

/** The configuration part of a provider: what POST sets and PATCH changes. */
export interface ProviderConfig {
  name: string;
  url: string;
  method: 'GET' | 'HEAD';
  expectedStatus: { min: number; max: number };
  timeoutMs: number;
  headers: Record<string, string> | null;
  enabled: boolean;
}

/** A unique-constraint violation on either dialect (SQLite error code or Postgres SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/**
 * Insert a provider in state `unknown`. The unique name is claimed by the insert itself.
 * @returns the row, or `name-taken` when another provider has this name.
 */
export async function insertProvider(
  db: Kysely<Database>,
  p: ProviderConfig & { now: number },
): Promise<{ outcome: 'inserted'; row: ProviderRow } | { outcome: 'name-taken' }> {
  const row: ProviderRow = {
    id: randomUUID(),
    name: p.name,
    url: p.url,
    method: p.method,
    expected_status_min: p.expectedStatus.min,
    expected_status_max: p.expectedStatus.max,
    timeout_ms: p.timeoutMs,
    headers: p.headers === null ? null : JSON.stringify(p.headers),
    enabled: p.enabled ? 1 : 0,
    state: 'unknown',
    state_since: p.now,
    consecutive_failures: 0,
    consecutive_successes: 0,
    last_checked_at: null,
    last_latency_ms: null,
    fence: 0,
    created_at: p.now,
    updated_at: p.now,
  };
  const r = await db
    .insertInto('providers')
    .values(row)
    .onConflict((oc) => oc.column('name').doNothing())
    .executeTakeFirst();
  if (Number(r.numInsertedOrUpdatedRows ?? 0) !== 1) return { outcome: 'name-taken' };
  return { outcome: 'inserted', row };
}

export async function getProvider(db: Kysely<Database>, id: string): Promise<ProviderRow | undefined> {
  return db.selectFrom('providers').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Newest first; `after` is the (created_at, id) of the last row of the previous page. */
export async function listProviders(
  db: Kysely<Database>,
  opts: { limit: number; after?: { createdAt: number; id: string } },
): Promise<ProviderRow[]> {
  return newestFirst(db.selectFrom('providers').selectAll(), opts).execute();
}

/**
 * Change a provider's configuration (never its health). Only the given fields change.
 * @returns the updated row, `missing`, or `name-taken` (another provider has the new name).
 */
export async function updateProviderConfig(
  db: Kysely<Database>,
  id: string,
  patch: Partial<ProviderConfig>,
  now: number,
): Promise<{ outcome: 'updated'; row: ProviderRow } | { outcome: 'missing' } | { outcome: 'name-taken' }> {
  const set: Updateable<ProvidersTable> = { updated_at: now };
  if (patch.name !== undefined) set.name = patch.name;
  if (patch.url !== undefined) set.url = patch.url;
  if (patch.method !== undefined) set.method = patch.method;
  if (patch.expectedStatus !== undefined) {
    set.expected_status_min = patch.expectedStatus.min;
    set.expected_status_max = patch.expectedStatus.max;
  }
  if (patch.timeoutMs !== undefined) set.timeout_ms = patch.timeoutMs;
  if (patch.headers !== undefined)
    set.headers = patch.headers === null ? null : JSON.stringify(patch.headers);
  if (patch.enabled !== undefined) set.enabled = patch.enabled ? 1 : 0;
  try {
    const r = await db.updateTable('providers').set(set).where('id', '=', id).executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return { outcome: 'missing' };
  } catch (err) {
    if (isUniqueViolation(err)) return { outcome: 'name-taken' };
    throw err;
  }
  const row = await getProvider(db, id);
  return row ? { outcome: 'updated', row } : { outcome: 'missing' };
}

/**
 * Delete a provider with its samples and transitions, in one transaction. The provider row
 * goes first: on Postgres that waits for a probe cycle writing it, so samples that cycle
 * committed are seen (and deleted) by the statements after it.
 * @returns false when there is no such provider.
 */
export async function deleteProviderWithHistory(db: Kysely<Database>, id: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const r = await trx.deleteFrom('providers').where('id', '=', id).executeTakeFirst();
    if (Number(r.numDeletedRows) !== 1) return false;
    await trx.deleteFrom('probe_samples').where('provider_id', '=', id).execute();
    await trx.deleteFrom('provider_transitions').where('provider_id', '=', id).execute();
    return true;
  });
}

/** Every enabled provider, the work of one probe cycle. */
export async function listEnabledProviders(db: Kysely<Database>): Promise<ProviderRow[]> {
  return db.selectFrom('providers').selectAll().where('enabled', '=', 1).orderBy('id').execute();
}

/** The highest fence any provider carries (0 when none): detects a reset fencing counter. */
export async function maxProviderFence(db: Kysely<Database>): Promise<number> {
  const r = await db
    .selectFrom('providers')
    .select((eb) => eb.fn.max('fence').as('fence'))
    .executeTakeFirst();
  return Number(r?.fence ?? 0);
}

/** Samples of one provider, newest first. */
export async function listRecentSamples(
  db: Kysely<Database>,
  providerId: string,
  limit: number,
): Promise<ProbeSampleRow[]> {
  return db
    .selectFrom('probe_samples')
    .selectAll()
    .where('provider_id', '=', providerId)
    .orderBy('checked_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}

/** State transitions of one provider, oldest first. */
export async function listProviderTransitions(
  db: Kysely<Database>,
  providerId: string,
): Promise<ProviderTransitionRow[]> {
  return db
    .selectFrom('provider_transitions')
    .selectAll()
    .where('provider_id', '=', providerId)
    .orderBy('at')
    .orderBy('id')
    .execute();
}

/** One probe's outcome and the state it moves its provider to. */
export interface ProbeOutcome {
  providerId: string;
  runId: string | null;
  checkedAt: number;
  ok: boolean;
  statusCode: number | null;
  latencyMs: number;
  errorClass: ProbeErrorClass | null;
  next: {
    state: ProviderState;
    consecutiveFailures: number;
    consecutiveSuccesses: number;
    transition: { from: ProviderState; to: ProviderState } | null;
  };
}

/**
 * Store a batch of probe outcomes in one transaction, fenced on `fence`: each provider is
 * updated only when `fence <= token`; its sample (and transition, if any) is inserted only
 * when that update changed the row. A provider deleted meanwhile is reported `missing`.
 * @returns the provider ids recorded and those missing.
 * @throws StaleFenceError (rolling the batch back) when a provider carries a newer fence.
 */
export async function recordProbeOutcomes(
  db: Kysely<Database>,
  fence: number,
  outcomes: readonly ProbeOutcome[],
): Promise<{ recorded: string[]; missing: string[] }> {
  if (outcomes.length === 0) return { recorded: [], missing: [] };
  return db.transaction().execute(async (trx) => {
    // One statement per batch (a 1,000-provider cycle must not cost 1,000 round trips).
    // The CASTs type the VALUES for Postgres; SQLite accepts them as they are.
    const values = sql.join(
      outcomes.map(
        (o) =>
          sql`(CAST(${o.providerId} AS text), CAST(${o.next.state} AS text), CAST(${o.next.consecutiveFailures} AS integer), CAST(${o.next.consecutiveSuccesses} AS integer), CAST(${o.checkedAt} AS bigint), CAST(${o.latencyMs} AS integer), CAST(${o.next.transition ? 1 : 0} AS integer))`,
      ),
    );
    const updated = await sql<{ id: string }>`
      WITH v (id, state, failures, successes, checked_at, latency_ms, changed) AS (VALUES ${values})
      UPDATE providers SET
        state = v.state,
        consecutive_failures = v.failures,
        consecutive_successes = v.successes,
        last_checked_at = v.checked_at,
        last_latency_ms = v.latency_ms,
        state_since = CASE WHEN v.changed = 1 THEN v.checked_at ELSE providers.state_since END,
        fence = ${fence}
      FROM v
      WHERE providers.id = v.id AND providers.fence <= ${fence}
      RETURNING providers.id`.execute(trx);
    const done = new Set(updated.rows.map((r) => r.id));
    const recorded = outcomes.filter((o) => done.has(o.providerId));
    const notUpdated = outcomes.filter((o) => !done.has(o.providerId)).map((o) => o.providerId);
    if (notUpdated.length > 0) {
      const stale = await trx.selectFrom('providers').select('id').where('id', 'in', notUpdated).execute();
      if (stale.length > 0) throw new StaleFenceError('probes', fence);
    }
    const missing = notUpdated;
    if (recorded.length > 0) {
      await trx
        .insertInto('probe_samples')
        .values(
          recorded.map((o) => ({
            id: randomUUID(),
            provider_id: o.providerId,
            run_id: o.runId,
            ok: o.ok ? 1 : 0,
            status_code: o.statusCode,
            latency_ms: o.latencyMs,
            error_class: o.errorClass,
            checked_at: o.checkedAt,
          })),
        )
        .execute();
      const transitions = recorded.filter((o) => o.next.transition !== null);
      if (transitions.length > 0) {
        await trx
          .insertInto('provider_transitions')
          .values(
            transitions.map((o) => ({
              id: randomUUID(),
              provider_id: o.providerId,
              from_state: o.next.transition!.from,
              to_state: o.next.transition!.to,
              at: o.checkedAt,
            })),
          )
          .execute();
      }
    }
    return { recorded: recorded.map((o) => o.providerId), missing };
  });
}
