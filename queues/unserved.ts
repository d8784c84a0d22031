import type { Queue } from 'bullmq';

/**
 * Whether `queue` holds work that is overdue while no worker listens: a job due (added, or
 * its delay over) at or before `overdueBefore`, in a queue that is not paused, with no
 * worker connected. A scheduler's next run, a retry's backoff and a job added a moment ago
 * are not overdue, and only when something is overdue are the workers counted: BullMQ
 * counts them by their connection names (CLIENT LIST, a call proportional to Redis's
 * clients). A Redis that refuses CLIENT LIST throws; on GCP Memorystore BullMQ reports a
 * client that is not there, so this never finds such a queue unserved.
 * @returns how many jobs wait (waiting, prioritized or delayed) when so, else undefined
 */
export async function overdueWithoutWorker(queue: Queue, overdueBefore: number): Promise<number | undefined> {
  // The first job of each kind: the oldest waiting, the one due soonest.
  const first = await queue.getJobs(['wait', 'prioritized', 'delayed'], 0, 0, true);
  if (!first.some((j) => j.timestamp + (j.delay ?? 0) <= overdueBefore)) return undefined;
  if (await queue.isPaused()) return undefined;
  if ((await queue.getWorkersCount()) > 0) return undefined;
  return queue.getJobCountByTypes('wait', 'prioritized', 'delayed');
}
