import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

/**
 * Whether `queue` holds work that is overdue while no worker listens: a job due at or before
 * `overdueBefore`, in a queue that is not paused, with no worker connected.
 *
 * When a job is due:
 * - delayed: its score in the delayed set, which is its due time × 0x1000 plus a counter
 *   (BullMQ's getDelayedScore.lua). A job's own `timestamp + delay` is wrong once BullMQ has
 *   moved it (a retry's backoff keeps the first timestamp);
 * - waiting: when it was added (`timestamp`). Re-applying a scheduler (every worker does at
 *   start) re-adds its waiting job with a new timestamp, so the grace starts again then.
 *
 * Only when something is overdue are the workers counted: BullMQ counts them by their
 * connection names (CLIENT LIST, a call proportional to Redis's clients). A Redis that
 * refuses CLIENT LIST throws; on GCP Memorystore BullMQ reports a client that is not
 * there, so this never finds such a queue unserved.
 * @param redis a short-command connection to the queue's Redis
 * @returns how many jobs wait (waiting, prioritized or delayed) when so, else undefined
 */
export async function overdueWithoutWorker(
  queue: Queue,
  redis: Redis,
  overdueBefore: number,
): Promise<number | undefined> {
  if (!(await hasOverdueJob(queue, redis, overdueBefore)) || (await queue.isPaused())) return undefined;
  if ((await queue.getWorkersCount()) > 0) return undefined;
  return queue.getJobCountByTypes('wait', 'prioritized', 'delayed');
}

async function hasOverdueJob(queue: Queue, redis: Redis, overdueBefore: number): Promise<boolean> {
  const [, score] = await redis.zrange(queue.toKey('delayed'), 0, 0, 'WITHSCORES');
  if (score !== undefined && Math.floor(Number(score) / 0x1000) <= overdueBefore) return true;
  // The oldest waiting job, and the first prioritized one.
  const ready = await queue.getJobs(['wait', 'prioritized'], 0, 0, true);
  return ready.some((j) => j.timestamp <= overdueBefore);
}
