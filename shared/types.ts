/**
 * Glossary: the words the code uses, defined once.
 *
 * - job: one unit of work in a BullMQ queue, named (e.g. `create-backup`) and carrying a
 *   zod-validated payload. Job ids are deterministic (`backup-<uuid>`), so enqueueing the
 *   same work twice is a no-op.
 * - queue: a BullMQ queue declared in `queues/`; each has a fixed set of job names.
 * - resource: a database row that an API request creates and a job advances (a backup,
 *   a simulation, a pruning run). The database row, not the BullMQ job, is the truth.
 * - claim: the atomic insert that reserves something (an idempotency key, a
 *   simulation_id) for exactly one request. A claim is never get-then-insert.
 * - lease: a claim that lapses at a given time, so a crashed holder cannot block forever.
 * - scope: the name of a single-runner lock (`backups`, `simulation:<id>`).
 * - fence: the monotonically increasing token taken with every lock acquisition; durable
 *   writes are conditional on it, so a stale holder changes nothing.
 * - schedule: a BullMQ job scheduler that enqueues a job repeatedly; the wanted schedule
 *   lives in the database and is synced to Redis.
 * - outbox: rows written in the same transaction as a resource, naming the job to enqueue;
 *   the relay dispatches those not dispatched right after commit.
 * - drain: stopping intake and waiting (bounded by DRAIN_TIMEOUT_MS) for active jobs.
 */

/** API key scopes. `admin` implies `write`, which implies `read`. */
export const SCOPES = ['read', 'write', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Who made a request: an authenticated API key. */
export interface Principal {
  /** api_keys.id */
  id: string;
  name: string;
  scopes: readonly Scope[];
}

/** Whether `have` grants `need`, given the admin ⊃ write ⊃ read ordering. */
export function scopeGrants(have: readonly Scope[], need: Scope): boolean {
  const rank: Record<Scope, number> = { read: 0, write: 1, admin: 2 };
  return have.some((s) => rank[s] >= rank[need]);
}
