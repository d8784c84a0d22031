import type { Kysely } from 'kysely';
import type { Clock } from '../shared/clock';
import type { Database } from '../shared/db/schema';
import { markOutboxDispatched, recordOutboxFailure, type OutboxRow } from '../shared/db/outbox-store';
import { toError } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { Queues } from './producer';

/**
 * Enqueue an outbox row's job and mark the row dispatched. The job id is deterministic, so
 * dispatching the same row twice (api after commit, then the relay) adds one job.
 * @returns whether the job is now in Redis; a failure is recorded on the row for the relay.
 */
export async function dispatchOutboxRow(
  deps: { db: Kysely<Database>; queues: Queues; clock: Clock; logger: Logger },
  row: OutboxRow,
): Promise<boolean> {
  try {
    await deps.queues.add(row.queue, row.job_name, row.payload, row.job_id);
  } catch (err) {
    const e = toError(err);
    deps.logger.warn(
      { err: e, queue: row.queue, job_id: row.job_id },
      'enqueue failed; the outbox relay will retry',
    );
    await recordOutboxFailure(deps.db, row.id, e.message).catch(() => undefined);
    return false;
  }
  await markOutboxDispatched(deps.db, row.id, deps.clock.now().getTime());
  deps.logger.info({ queue: row.queue, job_id: row.job_id, job_name: row.job_name }, 'job enqueued');
  return true;
}
