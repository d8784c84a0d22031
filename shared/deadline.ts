/**
 * How long the api and the relay wait for one Redis operation. BullMQ waits for a connection
 * that has never been ready without any limit of its own (a process started while Redis was
 * down would hang every enqueue and read), so every such call gets this deadline.
 */
export const REDIS_DEADLINE_MS = 3_000;

/** Thrown by {@link withDeadline} when the work did not settle in time. */
export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

/**
 * Settle with `work`, or reject with a DeadlineError after `ms` (an I/O deadline, not a timer
 * that drives work). The work is not cancelled: it may still complete later, so only use this
 * for work whose late completion is harmless (idempotent adds, reads).
 */
export async function withDeadline<T>(what: string, ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DeadlineError(`${what} did not answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    // A late rejection of the losing work must not become an unhandled rejection.
    work.catch(() => undefined);
  }
}
