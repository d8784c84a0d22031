import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { assertNoLeakedChildren, killAllChildren, spawnTsx, type SpawnedProcess } from '../helpers/processes';
import { testRedisUrl, testSqliteUrl, uniquePrefix, waitFor } from '../helpers/services';

/**
 * The outbox and the reconciler with real processes: the api dies between a backup's commit
 * and its enqueue (crash drill), and Redis loses every key while backups are queued. In both
 * cases each accepted backup still runs, exactly once.
 */

const ADMIN_KEY = 'ty_e2e_admin_key_0123456789abcdefghij';

let redis: Redis;
let db: DatabaseHandle | undefined;
let prefix: string;
let databaseUrl: string;
let backupDir: string;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TASKYARD_ENV: 'test',
    TASKYARD_ADMIN_KEY: ADMIN_KEY,
    DATABASE_URL: databaseUrl,
    REDIS_URL: testRedisUrl(),
    REDIS_PREFIX: prefix,
    BACKUP_DIR: backupDir,
    LOG_LEVEL: 'info',
    SCHEDULE_CHECK_SECONDS: '1',
    RECONCILE_EVERY_MS: '1000',
    RECONCILE_AFTER_MS: '0',
    ...extra,
  };
}

async function startApi(extra: Record<string, string> = {}): Promise<{ proc: SpawnedProcess; url: string }> {
  const proc = spawnTsx('api', 'api/server.ts', [], env({ PORT: '0', ...extra }));
  const l = await proc.waitForLog((x) => x.msg === 'api listening', {
    what: 'api listening',
    timeoutMs: 30_000,
  });
  return { proc, url: `http://127.0.0.1:${String(l.port)}` };
}

async function startWorker(
  name: string,
  queues: string,
  extra: Record<string, string> = {},
): Promise<SpawnedProcess> {
  const proc = spawnTsx(name, 'workers/main.ts', ['--queues', queues], env(extra));
  await proc.waitForLog((x) => x.msg === 'worker ready', { what: `${name} ready`, timeoutMs: 30_000 });
  return proc;
}

const postBackup = (url: string, key: string) =>
  fetch(`${url}/v1/backups`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${ADMIN_KEY}`,
      'content-type': 'application/json',
      'idempotency-key': key,
    },
    body: '{}',
  });

/** Manual backups only: the backup scheduler's first run adds a `scheduled` one. */
const backupRows = () =>
  db!.db.selectFrom('backups').selectAll().where('trigger', '=', 'manual').orderBy('created_at').execute();

beforeAll(() => {
  redis = createRedis(testRedisUrl(), 'client');
});
afterEach(async () => {
  await assertNoLeakedChildren();
  await db?.close();
  db = undefined;
  await deleteKeysWithPrefix(redis, prefix);
  fs.rmSync(backupDir, { recursive: true, force: true });
});
afterAll(async () => {
  await killAllChildren();
  await redis.quit();
});

function fresh(label: string) {
  prefix = uniquePrefix(label);
  databaseUrl = testSqliteUrl(label);
  backupDir = fs.mkdtempSync(path.join(os.tmpdir(), `taskyard-${label}-`));
}

describe('outbox relay and reconciler', () => {
  it('an api that dies between commit and enqueue still gets its backup run by the relay, and the retry replays', async () => {
    fresh('crash');
    const crashing = await startApi({ TASKYARD_FAULT: 'exit-after-commit' });
    await postBackup(crashing.url, 'crash-1').catch(() => undefined);
    expect(await crashing.proc.waitForExit(15_000)).toEqual({ code: 86, signal: null });

    db = await createDatabase(databaseUrl);
    const [row] = await backupRows();
    expect(row?.status).toBe('queued');
    const outbox = await db.db.selectFrom('outbox').selectAll().execute();
    expect(outbox).toHaveLength(1);
    expect(outbox[0]!.dispatched_at).toBeNull();
    const queue = new Queue('backups', { connection: redis, prefix });
    expect(await queue.getJob(outbox[0]!.job_id)).toBeUndefined();

    // The reconciler waits its production age here, so it is the relay that must do the work.
    const worker = await startWorker('worker', 'backups,maintenance', { RECONCILE_AFTER_MS: '60000' });
    await waitFor(async () => (await backupRows())[0]?.status === 'succeeded', {
      timeoutMs: 30_000,
      what: 'backup succeeded',
    });
    const after = await db.db.selectFrom('outbox').selectAll().executeTakeFirstOrThrow();
    expect(after.dispatched_at).not.toBeNull();
    expect(worker.logs.some((l) => l.msg === 'outbox relay dispatched rows' && l.dispatched === 1)).toBe(
      true,
    );
    expect((await backupRows())[0]!.attempts).toBe(1);

    // The client's retry with the same key gets the first answer, not a second backup.
    const api = await startApi();
    const retry = await postBackup(api.url, 'crash-1');
    expect(retry.status).toBe(202);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(((await retry.json()) as { id: string }).id).toBe(row!.id);
    expect(await backupRows()).toHaveLength(1);

    await queue.close();
    worker.signal('SIGTERM');
    api.proc.signal('SIGTERM');
    expect((await worker.waitForExit(30_000)).code).toBe(0);
    expect((await api.proc.waitForExit(30_000)).code).toBe(0);
  });

  it('after every Redis key is wiped while backups are queued, schedulers come back and each backup runs exactly once', async () => {
    fresh('wipe');
    const api = await startApi();
    // The maintenance worker runs the relay, reconciler and schedule sync, but no backups:
    // the backups stay queued until the wipe is over.
    const maintenance = await startWorker('maintenance', 'maintenance');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await postBackup(api.url, `wipe-${i}`);
      expect(r.status).toBe(202);
      ids.push(((await r.json()) as { id: string }).id);
    }
    const queue = new Queue('backups', { connection: redis, prefix });
    // Each manual backup's own job (the backup scheduler also enqueued its first run).
    const manualJobs = async () =>
      (await Promise.all(ids.map((id) => queue.getJob(`backup-${id}`)))).filter(Boolean).length;
    expect(await manualJobs()).toBe(3);

    await deleteKeysWithPrefix(redis, prefix);
    expect(await manualJobs()).toBe(0);

    // The schedule sync notices within SCHEDULE_CHECK_SECONDS, re-creates the schedulers and
    // reconciles: the three jobs are back.
    await maintenance.waitForLog(
      (l) => typeof l.msg === 'string' && l.msg.startsWith('schedulers were missing'),
      {
        what: 'schedule sync noticed the wipe',
        timeoutMs: 15_000,
      },
    );
    await waitFor(async () => (await manualJobs()) === 3, {
      what: 'three backup jobs re-enqueued',
      timeoutMs: 15_000,
    });
    const maint = new Queue('maintenance', { connection: redis, prefix });
    expect(await maint.getJobScheduler('outbox-relay')).toBeDefined();
    expect(await queue.getJobScheduler('backup')).toBeDefined();

    const worker = await startWorker('backups', 'backups');
    db = await createDatabase(databaseUrl);
    const manualRows = backupRows;
    await waitFor(async () => (await manualRows()).every((r) => r.status === 'succeeded'), {
      what: 'all manual backups succeeded',
      timeoutMs: 60_000,
    });
    const rows = await manualRows();
    expect(rows.map((r) => r.id).sort()).toEqual([...ids].sort());
    expect(rows.map((r) => r.attempts)).toEqual([1, 1, 1]);
    // The row commits before the worker logs it, and the line still has to cross the pipe.
    const succeededLines = () =>
      worker.logs
        .filter((l) => l.msg === 'backup succeeded' && ids.includes(String(l.backup_id)))
        .map((l) => String(l.backup_id));
    await waitFor(() => succeededLines().length >= ids.length, {
      what: 'a backup succeeded line per backup',
      timeoutMs: 10_000,
    });
    expect([...succeededLines()].sort()).toEqual([...ids].sort());

    await queue.close();
    await maint.close();
    for (const p of [worker, maintenance, api.proc]) p.signal('SIGTERM');
    for (const p of [worker, maintenance, api.proc]) expect((await p.waitForExit(30_000)).code).toBe(0);
  });
});
