import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { expectEachBackupRanOnce, startBackupDrill } from '../helpers/backup-drill';
import { assertNoLeakedChildren, killAllChildren } from '../helpers/processes';
import { testRedisUrl, testSqliteUrl, uniquePrefix, waitFor } from '../helpers/services';

/**
 * A Redis restart that keeps its data, under load, with real api and worker processes:
 * every connection the processes hold is cut (CLIENT KILL), twice, while clients are
 * creating backups and the worker is running them. Every accepted backup still runs to
 * completion exactly once, and neither process ends.
 *
 * Only this test's connections are cut: each taskyard connection is named after its
 * REDIS_PREFIX (BullMQ names its own the same way), so the other test files are untouched.
 */

const ADMIN_KEY = 'ty_e2e_admin_key_redis_restart_0123456789';
const BEFORE = 8;
const DURING = 12;

let redis: Redis | undefined;
let db: DatabaseHandle | undefined;
let prefix: string | undefined;
let backupDir: string | undefined;

afterEach(async () => {
  await killAllChildren();
  await assertNoLeakedChildren();
  await db?.close();
  db = undefined;
  if (redis && prefix) await deleteKeysWithPrefix(redis, prefix);
  if (backupDir) fs.rmSync(backupDir, { recursive: true, force: true });
});
afterAll(async () => {
  await redis?.quit();
});

/** CLIENT KILL every connection named under `prefix`; resolves with how many were cut. */
async function cutConnections(admin: Redis, prefix: string): Promise<number> {
  const list = (await admin.client('LIST')) as string;
  const ids = list
    .split('\n')
    .map((line) => Object.fromEntries(line.split(' ').map((kv) => kv.split('=', 2) as [string, string])))
    .filter((c) => typeof c.name === 'string' && c.name.startsWith(`${prefix}:`))
    .map((c) => c.id!);
  for (const id of ids) await admin.client('KILL', 'ID', id);
  return ids.length;
}

describe('a Redis restart under load', () => {
  it('loses no accepted backup and runs none twice when every connection is cut, twice', async () => {
    redis = createRedis(testRedisUrl(), 'client');
    prefix = uniquePrefix('redisrestart');
    backupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-redisrestart-'));
    const databaseUrl = testSqliteUrl('redisrestart');
    const { api, worker, create, gated } = await startBackupDrill({
      adminKey: ADMIN_KEY,
      databaseUrl,
      prefix,
      backupDir,
      keyPrefix: 'rr',
    });

    const before = await Promise.all(Array.from({ length: BEFORE }, (_, i) => create(i)));

    const during = gated(BEFORE, DURING);
    during.open();
    // api, worker queues (and BullMQ's blocking duplicates), schedule sync: all of them.
    expect(await cutConnections(redis, prefix)).toBeGreaterThanOrEqual(4);
    // Cut again once they are back, so the second cut finds reconnected clients mid-work.
    await waitFor(async () => (await cutConnections(redis!, prefix!)) >= 4, {
      what: 'the connections back, and cut again',
      timeoutMs: 15_000,
      intervalMs: 50,
    });

    const ids = [...before, ...(await during.done)].map((b) => b.id);
    expect(new Set(ids).size).toBe(BEFORE + DURING);

    db = await createDatabase(databaseUrl);
    await expectEachBackupRanOnce({ db, ids, backupDir, api, worker, timeoutMs: 90_000 });

    expect([...api.logs, ...worker.logs].filter((l) => l.level === 60).map((l) => l.msg)).toEqual([]);
    api.signal('SIGTERM');
    worker.signal('SIGTERM');
    expect((await api.waitForExit(30_000)).code).toBe(0);
    expect((await worker.waitForExit(30_000)).code).toBe(0);
  }, 150_000);
});
