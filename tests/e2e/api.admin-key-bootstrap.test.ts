import { afterEach, describe, expect, it } from 'vitest';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { assertNoLeakedChildren, spawnTsx } from '../helpers/processes';
import { testRedisUrl, testSqliteUrl, uniquePrefix } from '../helpers/services';

afterEach(async () => {
  await assertNoLeakedChildren();
});

describe('admin key at api start', () => {
  it('outside development with no admin key and no TASKYARD_ADMIN_KEY: none is made, and a warning says how to make one', async () => {
    const prefix = uniquePrefix('nokey');
    const api = spawnTsx('api', 'api/server.ts', [], {
      ...process.env,
      TASKYARD_ENV: 'production',
      TASKYARD_ADMIN_KEY: '',
      HOST: '127.0.0.1',
      PORT: '0',
      DATABASE_URL: testSqliteUrl('nokey'),
      REDIS_URL: testRedisUrl(),
      REDIS_PREFIX: prefix,
      LOG_LEVEL: 'info',
    });
    try {
      await api.waitForLog((l) => l.msg === 'api listening', { what: 'api listening', timeoutMs: 30_000 });
      const warned = api.logs.filter((l) => String(l.msg).startsWith('no active admin key exists'));
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ level: 40 });
      expect(String(warned[0]!.msg)).toContain('keys create --name admin --scopes admin');
      expect(api.text()).not.toMatch(/admin key \(shown once\)/);
      api.signal('SIGTERM');
      expect(await api.waitForExit(30_000)).toEqual({ code: 0, signal: null });
    } finally {
      await api.kill();
      const redis = createRedis(testRedisUrl(), 'client');
      await deleteKeysWithPrefix(redis, prefix);
      await redis.quit();
    }
  });
});
