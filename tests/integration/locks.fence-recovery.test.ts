import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StaleFenceError } from '../../shared/errors';
import { createLocks, withFenceRecovery, type Locks } from '../../shared/locks';
import { createLogger } from '../../shared/logger';
import { createRedis, deleteKeysWithPrefix, redisKeys } from '../../shared/redis';
import { testRedisUrl, uniquePrefix } from '../helpers/services';

/**
 * Fencing counters live in Redis; a row keeps the fence of its last writer. After Redis
 * loses the counter, a holder finds the row fenced above its token and recovers; a row
 * written by a genuinely newer holder is still refused.
 */
describe('withFenceRecovery', () => {
  const prefix = uniquePrefix('fence-recovery');
  let redis: Redis;
  let locks: Locks;

  beforeAll(() => {
    redis = createRedis(testRedisUrl(), 'client');
    locks = createLocks({ redis, prefix, logger: createLogger({ level: 'silent' }) });
  });
  afterAll(async () => {
    await deleteKeysWithPrefix(redis, prefix);
    await redis.quit();
  });

  /** A row with a fence: the write succeeds only when `fence <= token`, like the stores' updates. */
  function row(initialFence: number) {
    const r = { fence: initialFence, writes: 0 };
    const write = async (token: number) => {
      if (r.fence > token) return 'stale' as const;
      r.fence = token;
      r.writes++;
      return 'ok' as const;
    };
    return { r, write };
  }

  it('after the counter is lost, the holder advances past the stored fence and writes once', async () => {
    const { r, write } = row(7);
    await redis.del(redisKeys.fence(prefix, 'scope-a')); // Redis lost the counter
    const result = await locks.withSingleRunner('scope-a', async (lock) => {
      expect(lock.fence).toBe(1);
      const out = await withFenceRecovery(
        lock,
        write,
        (x) => x === 'stale',
        () => r.fence,
      );
      return { out, fence: lock.fence };
    });
    expect(result).toEqual({ out: 'ok', fence: 8 });
    expect(r).toEqual({ fence: 8, writes: 1 });
    expect(await locks.currentFence('scope-a')).toBe(8);
  });

  it('a row written by a newer holder stays refused: StaleFenceError, nothing written', async () => {
    await redis.set(redisKeys.fence(prefix, 'scope-b'), '10');
    const { r, write } = row(0);
    await expect(
      locks.withSingleRunner('scope-b', async (lock) => {
        // A newer holder (token 12) wrote after we took token 11: the counter is not behind.
        await redis.set(redisKeys.fence(prefix, 'scope-b'), '12');
        r.fence = 12;
        return withFenceRecovery(
          lock,
          write,
          (x) => x === 'stale',
          () => r.fence,
        );
      }),
    ).rejects.toBeInstanceOf(StaleFenceError);
    expect(r).toEqual({ fence: 12, writes: 0 });
  });
});
