import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { relaxedDurability } from './database';
import type { Database } from './schema';

/**
 * Durable idempotency records (DESIGN.md §4.1). One row per (principal, key).
 *
 * The claim is a single INSERT … ON CONFLICT DO UPDATE … WHERE: a fresh key inserts; an
 * expired record, or an in-flight claim whose lease lapsed (same fingerprint), is taken
 * over in the same statement; anything else leaves the row alone and is classified by a
 * follow-up read. Every claim carries a random claim token, and completion and release
 * are conditional on it, so a holder whose lease was taken over can neither complete
 * nor release the new holder's claim.
 */

export interface StoredResponse {
  status: number;
  body: unknown;
  location: string | null;
}

export type ClaimOutcome =
  | { outcome: 'claimed'; claimToken: string; tookOver: boolean }
  | { outcome: 'in_flight'; leaseExpiresAt: number }
  | { outcome: 'mismatch' }
  | { outcome: 'completed'; response: StoredResponse }
  /** The stored response could not be read back: reported, never trusted. */
  | { outcome: 'corrupt'; detail: string };

export interface ClaimInput {
  principalId: string;
  key: string;
  fingerprint: string;
  now: number;
  /** In-flight lease. @defaultValue 30_000 */
  leaseMs?: number;
  /** Record lifetime (IDEMPOTENCY_TTL_HOURS). */
  ttlMs: number;
}

/**
 * Claim (principal, key). The claim is not fsynced on its own on SQLite (relaxedDurability):
 * a claim lost in a power cut is one whose request was never answered, so the client's retry
 * simply claims again; the transaction that completes it is durable, and so is everything
 * before it in the log.
 */
export async function claimIdempotencyKey(db: Kysely<Database>, input: ClaimInput): Promise<ClaimOutcome> {
  return relaxedDurability(db, (db) => claim(db, input));
}

async function claim(db: Kysely<Database>, input: ClaimInput): Promise<ClaimOutcome> {
  const { principalId, key, fingerprint, now, ttlMs } = input;
  const leaseExpiresAt = now + (input.leaseMs ?? 30_000);
  const claimToken = randomUUID();
  const fresh = {
    fingerprint,
    state: 'in_flight' as const,
    claim_token: claimToken,
    lease_expires_at: leaseExpiresAt,
    response_status: null,
    response_body: null,
    response_location: null,
    created_at: now,
    expires_at: now + ttlMs,
  };
  const won = await db
    .insertInto('idempotency_keys')
    .values({ principal_id: principalId, key, ...fresh })
    .onConflict((oc) =>
      oc
        .columns(['principal_id', 'key'])
        .doUpdateSet(fresh)
        .where((eb) =>
          eb.or([
            eb('idempotency_keys.expires_at', '<=', now),
            eb.and([
              eb('idempotency_keys.state', '=', 'in_flight'),
              eb('idempotency_keys.lease_expires_at', '<=', now),
              eb('idempotency_keys.fingerprint', '=', fingerprint),
            ]),
          ]),
        ),
    )
    .returning(['claim_token', 'created_at'])
    .executeTakeFirst();
  if (won?.claim_token === claimToken) {
    return { outcome: 'claimed', claimToken, tookOver: false };
  }

  const row = await db
    .selectFrom('idempotency_keys')
    .select([
      'fingerprint',
      'state',
      'lease_expires_at',
      'response_status',
      'response_body',
      'response_location',
    ])
    .where('principal_id', '=', principalId)
    .where('key', '=', key)
    .executeTakeFirst();
  if (!row) {
    // Released between our insert attempt and this read: claim again.
    return claim(db, input);
  }
  if (row.fingerprint !== fingerprint) return { outcome: 'mismatch' };
  if (row.state === 'in_flight')
    return { outcome: 'in_flight', leaseExpiresAt: Number(row.lease_expires_at) };
  if (row.response_status === null || row.response_body === null) {
    return { outcome: 'corrupt', detail: 'completed record has no stored response' };
  }
  try {
    return {
      outcome: 'completed',
      response: {
        status: row.response_status,
        body: JSON.parse(row.response_body),
        location: row.response_location,
      },
    };
  } catch (err) {
    return { outcome: 'corrupt', detail: `stored response is not JSON: ${(err as Error).message}` };
  }
}

/**
 * Store the response of a claimed request. Call inside the transaction that writes the
 * resource, so the record and the resource commit together.
 * @returns false when the claim was taken over (lease lapsed): the caller must roll back.
 */
export async function completeIdempotencyKey(
  db: Kysely<Database>,
  input: { principalId: string; key: string; claimToken: string; response: StoredResponse },
): Promise<boolean> {
  const r = await db
    .updateTable('idempotency_keys')
    .set({
      state: 'completed',
      lease_expires_at: null,
      response_status: input.response.status,
      response_body: JSON.stringify(input.response.body),
      response_location: input.response.location,
    })
    .where('principal_id', '=', input.principalId)
    .where('key', '=', input.key)
    .where('claim_token', '=', input.claimToken)
    .where('state', '=', 'in_flight')
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Give a claim back (the handler failed with a 5xx): a retry runs again. */
export async function releaseIdempotencyKey(
  db: Kysely<Database>,
  input: { principalId: string; key: string; claimToken: string },
): Promise<boolean> {
  const r = await db
    .deleteFrom('idempotency_keys')
    .where('principal_id', '=', input.principalId)
    .where('key', '=', input.key)
    .where('claim_token', '=', input.claimToken)
    .where('state', '=', 'in_flight')
    .executeTakeFirst();
  return Number(r.numDeletedRows) === 1;
}
