import { DeadlineError, withDeadline } from './deadline';
import { Redis, type RedisOptions } from 'ioredis';

/**
 * One place that makes Redis connections.
 * - `worker`: BullMQ Workers and QueueEvents block; they need maxRetriesPerRequest: null.
 * - `client`: short commands (Queue.add, locks, fences); fail fast instead of queueing
 *   forever when Redis is down, so the api can answer 503.
 */
export type RedisRole = 'worker' | 'client';

export function createRedis(url: string, role: RedisRole, extra: RedisOptions = {}): Redis {
  const options: RedisOptions =
    role === 'worker'
      ? { maxRetriesPerRequest: null, enableReadyCheck: true }
      : { maxRetriesPerRequest: 2, enableOfflineQueue: true, connectTimeout: 5_000 };
  return new Redis(url, { lazyConnect: false, ...options, ...extra });
}

/** Keys taskyard owns outside BullMQ, all under the configured prefix. */
export const redisKeys = {
  lock: (prefix: string, scope: string) => `${prefix}:lock:${scope}`,
  fence: (prefix: string, scope: string) => `${prefix}:fence:${scope}`,
};

/** Delete every key under `<prefix>:` (tests and the Redis-wipe drills). Uses SCAN, never KEYS. */
export async function deleteKeysWithPrefix(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

/** Ping with a deadline; for readiness checks. @throws DeadlineError when Redis does not answer in time. */
export async function pingRedis(redis: Redis, timeoutMs = 1_000): Promise<void> {
  try {
    await withDeadline('redis', timeoutMs, redis.ping());
  } catch (err) {
    // The readiness page shows this wording: say which command went unanswered.
    throw err instanceof DeadlineError
      ? new DeadlineError(`redis did not answer PING within ${timeoutMs} ms`)
      : err;
  }
}
