import type { Kysely } from 'kysely';
import type { Clock } from '../shared/clock';
import type { Database } from '../shared/db/schema';
import {
  MARK_DISPATCHED_MAX_IDS,
  markOutboxDispatched,
  recordOutboxFailure,
  type OutboxRow,
} from '../shared/db/outbox-store';
import { toError } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { Queues } from './producer';

/** `unmarked`: the job is in Redis but the row could not be marked; the relay re-adds the same job id. */
export type DispatchOutcome = 'dispatched' | 'enqueue-failed' | 'unmarked';

/**
 * Enqueue an outbox row's job and mark the row dispatched. The job id is deterministic, so
 * dispatching the same row twice (api after commit, then the relay) adds one job. Never
 * throws: the work is committed either way, and what failed is left to the relay.
 */
export async function dispatchOutboxRow(
  deps: { db: Kysely<Database>; queues: Queues; clock: Clock; logger: Logger },
  row: OutboxRow,
): Promise<DispatchOutcome> {
  const where = { queue: row.queue, job_id: row.job_id };
  try {
    await deps.queues.add(row.queue, row.job_name, row.payload, row.job_id);
  } catch (err) {
    const e = toError(err);
    deps.logger.warn({ err: e, ...where }, 'enqueue failed; the outbox relay will retry');
    await recordOutboxFailure(deps.db, row.id, e.message).catch(() => undefined);
    return 'enqueue-failed';
  }
  deps.logger.info({ ...where, job_name: row.job_name }, 'job enqueued');
  try {
    await markDispatchedSoon(deps.db, row.id, deps.clock.now().getTime());
  } catch (err) {
    deps.logger.warn(
      { err: toError(err), ...where },
      'job enqueued, but its outbox row could not be marked; the relay will add the same job id again',
    );
    return 'unmarked';
  }
  return 'dispatched';
}

interface MarkBatch {
  ids: string[];
  now: number;
  done: Promise<void>;
}

/** The batch still taking ids, per database. */
const openMarkBatches = new WeakMap<Kysely<Database>, MarkBatch>();

/**
 * Marks asked for in one turn of the event loop go out as one UPDATE: one round trip and one
 * commit for all the requests whose jobs were added in that turn, instead of one each.
 * Resolves when the UPDATE naming `id` has committed.
 */
function markDispatchedSoon(db: Kysely<Database>, id: string, now: number): Promise<void> {
  let batch = openMarkBatches.get(db);
  if (!batch) {
    let start!: () => void;
    const started = new Promise<void>((resolve) => (start = resolve));
    const created: MarkBatch = {
      ids: [],
      now,
      done: started.then(() => markOutboxDispatched(db, created.ids, created.now)),
    };
    batch = created;
    openMarkBatches.set(db, created);
    setImmediate(() => {
      if (openMarkBatches.get(db) === created) openMarkBatches.delete(db);
      start();
    });
  }
  batch.ids.push(id);
  // Full: later ids start the next batch.
  if (batch.ids.length >= MARK_DISPATCHED_MAX_IDS) openMarkBatches.delete(db);
  return batch.done;
}
