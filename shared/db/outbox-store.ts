import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { relaxedDurability } from './database';
import type { Database } from './schema';

/**
 * The transactional outbox (DESIGN.md §4.6). A row names the job to enqueue for a
 * resource and is written in the resource's transaction; dispatching it is an
 * idempotent `queue.add` with the row's deterministic job id.
 */

export interface OutboxRow {
  id: string;
  queue: string;
  job_name: string;
  job_id: string;
  payload: unknown;
  created_at: number;
  attempts: number;
}

export async function insertOutboxRow(
  db: Kysely<Database>,
  row: { queue: string; jobName: string; jobId: string; payload: unknown; now: number },
): Promise<OutboxRow> {
  const id = randomUUID();
  await db
    .insertInto('outbox')
    .values({
      id,
      queue: row.queue,
      job_name: row.jobName,
      job_id: row.jobId,
      payload: JSON.stringify(row.payload),
      created_at: row.now,
      dispatched_at: null,
      attempts: 0,
      last_error: null,
    })
    .execute();
  return {
    id,
    queue: row.queue,
    job_name: row.jobName,
    job_id: row.jobId,
    payload: row.payload,
    created_at: row.now,
    attempts: 0,
  };
}

/** Most ids one dispatched-mark UPDATE names. */
export const MARK_DISPATCHED_MAX_IDS = 500;

/**
 * Mark outbox rows dispatched (at most MARK_DISPATCHED_MAX_IDS ids). Relaxed durability: a lost
 * mark only makes the relay add the same job id again: ignored while BullMQ keeps the job, and
 * otherwise a job whose fenced start refuses its finished resource.
 */
export async function markOutboxDispatched(
  db: Kysely<Database>,
  ids: readonly string[],
  now: number,
): Promise<void> {
  if (ids.length === 0) return;
  if (ids.length > MARK_DISPATCHED_MAX_IDS) {
    throw new Error(`markOutboxDispatched takes at most ${MARK_DISPATCHED_MAX_IDS} ids, got ${ids.length}`);
  }
  await relaxedDurability(db, (db) =>
    db
      .updateTable('outbox')
      .set((eb) => ({ dispatched_at: now, attempts: eb('attempts', '+', 1), last_error: null }))
      .where('id', 'in', ids)
      .where('dispatched_at', 'is', null)
      .execute(),
  );
}

export async function recordOutboxFailure(db: Kysely<Database>, id: string, error: string): Promise<void> {
  await db
    .updateTable('outbox')
    .set((eb) => ({ attempts: eb('attempts', '+', 1), last_error: error.slice(0, 1000) }))
    .where('id', '=', id)
    .execute();
}

/** Rows not dispatched and created at or before `createdBefore`, oldest first. */
export async function listUndispatchedOutbox(
  db: Kysely<Database>,
  opts: { createdBefore: number; limit: number },
): Promise<OutboxRow[]> {
  const rows = await db
    .selectFrom('outbox')
    .select(['id', 'queue', 'job_name', 'job_id', 'payload', 'created_at', 'attempts'])
    .where('dispatched_at', 'is', null)
    .where('created_at', '<=', opts.createdBefore)
    .orderBy('created_at')
    .limit(opts.limit)
    .execute();
  return rows.map((r) => ({ ...r, payload: JSON.parse(r.payload) as unknown, attempts: Number(r.attempts) }));
}
