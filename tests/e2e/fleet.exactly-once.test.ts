import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { noopQueue } from '../../queues/noop';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { noopEffectsKey } from '../../workers/processors/noop';
import { assertNoLeakedChildren, killAllChildren, spawnTsx, type SpawnedProcess } from '../helpers/processes';
import { testRedisUrl, testSqliteUrl, uniquePrefix, waitFor } from '../helpers/services';

/**
 * The fleet as deployed: one api process and two worker processes (real children) on one
 * Redis prefix and one database. Jobs of the test-only `noop` queue record one effect each
 * (HINCRBY per job id), so executions are counted exactly.
 */

const JOBS = 500;

let redis: Redis;
let queue: Queue;
let prefix: string;
let databaseUrl: string;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TASKYARD_ENV: 'test',
    DATABASE_URL: databaseUrl,
    REDIS_URL: testRedisUrl(),
    REDIS_PREFIX: prefix,
    // debug: the noop queue logs `job completed` at debug, and the test counts those lines.
    LOG_LEVEL: 'debug',
    NOOP_CONCURRENCY: '4',
    DRAIN_TIMEOUT_MS: '20000',
    ...extra,
  };
}

async function startFleet(
  extra: Record<string, string> = {},
): Promise<{ api: SpawnedProcess; workers: SpawnedProcess[] }> {
  const api = spawnTsx('api', 'api/server.ts', [], env({ PORT: '0', ...extra }));
  const listening = await api.waitForLog((l) => l.msg === 'api listening', {
    what: 'api listening',
    timeoutMs: 30_000,
  });
  const ready = await fetch(`http://127.0.0.1:${String(listening.port)}/readyz`);
  expect(ready.status).toBe(200);
  const workers = ['worker-a', 'worker-b'].map((name) =>
    spawnTsx(name, 'workers/main.ts', ['--queues', 'noop'], env(extra)),
  );
  await Promise.all(
    workers.map((w) =>
      w.waitForLog((l) => l.msg === 'worker ready', { what: 'worker ready', timeoutMs: 30_000 }),
    ),
  );
  return { api, workers };
}

async function enqueue(holdMs: number): Promise<void> {
  await queue.addBulk(
    Array.from({ length: JOBS }, (_, i) => ({
      name: 'noop',
      data: { seq: i, hold_ms: holdMs },
      opts: { ...noopQueue.defaultJobOptions, jobId: `job-${i}` },
    })),
  );
}

const completedCount = () => queue.getCompletedCount();

async function effects(): Promise<Map<string, number>> {
  const raw = await redis.hgetall(noopEffectsKey(prefix));
  return new Map(Object.entries(raw).map(([k, v]) => [k, Number(v)]));
}

beforeAll(() => {
  redis = createRedis(testRedisUrl(), 'client');
});

afterEach(async () => {
  await assertNoLeakedChildren();
  await queue?.close();
  await deleteKeysWithPrefix(redis, prefix);
});

afterAll(async () => {
  await killAllChildren();
  await redis.quit();
});

describe('a fleet of api + two workers', () => {
  it('completes 500 jobs exactly once while one worker is stopped with SIGTERM mid-load', async () => {
    prefix = uniquePrefix('fleet-term');
    databaseUrl = testSqliteUrl('fleet-term');
    queue = new Queue(noopQueue.name, { connection: redis, prefix });
    const { api, workers } = await startFleet();
    const [a, b] = workers as [SpawnedProcess, SpawnedProcess];

    await enqueue(20);
    await waitFor(async () => (await completedCount()) >= 100, {
      what: '100 jobs completed',
      timeoutMs: 60_000,
    });
    a.signal('SIGTERM');
    expect(await a.waitForExit(30_000)).toEqual({ code: 0, signal: null });
    expect(b.running()).toBe(true);

    await waitFor(async () => (await completedCount()) === JOBS, {
      what: `${JOBS} jobs completed`,
      timeoutMs: 120_000,
    });
    const counts = await queue.getJobCounts('failed', 'waiting', 'active', 'delayed');
    expect(counts).toEqual({ failed: 0, waiting: 0, active: 0, delayed: 0 });
    const fx = await effects();
    expect(fx.size).toBe(JOBS);
    expect([...fx.values()].filter((n) => n !== 1)).toEqual([]);
    // Both workers took part before the stop.
    const ranOn = (w: SpawnedProcess) => w.logs.filter((l) => l.msg === 'job completed').length;
    // Log lines cross a pipe after the job's state is in Redis: wait for them to arrive.
    await waitFor(() => ranOn(a) + ranOn(b) >= JOBS, { what: `${JOBS} job completed lines` });
    expect(ranOn(a)).toBeGreaterThan(0);
    expect(ranOn(a) + ranOn(b)).toBe(JOBS);

    b.signal('SIGTERM');
    api.signal('SIGTERM');
    expect(await b.waitForExit(30_000)).toEqual({ code: 0, signal: null });
    expect(await api.waitForExit(30_000)).toEqual({ code: 0, signal: null });
  });

  it('loses no job when a worker is killed with SIGKILL mid-load; only jobs active at the kill can repeat', async () => {
    prefix = uniquePrefix('fleet-kill');
    databaseUrl = testSqliteUrl('fleet-kill');
    queue = new Queue(noopQueue.name, { connection: redis, prefix });
    // Short BullMQ lock so the dead worker's active jobs are recovered in seconds.
    const { api, workers } = await startFleet({
      WORKER_LOCK_DURATION_MS: '2000',
      WORKER_STALLED_INTERVAL_MS: '1000',
    });
    const [a, b] = workers as [SpawnedProcess, SpawnedProcess];

    await enqueue(20);
    await waitFor(async () => (await completedCount()) >= 100, {
      what: '100 jobs completed',
      timeoutMs: 60_000,
    });
    a.child.kill('SIGKILL');
    expect((await a.waitForExit(10_000)).signal).toBe('SIGKILL');

    await waitFor(async () => (await completedCount()) === JOBS, {
      what: `${JOBS} jobs completed`,
      timeoutMs: 120_000,
    });
    expect((await queue.getJobCounts('failed')).failed).toBe(0);
    const fx = await effects();
    expect(fx.size).toBe(JOBS);
    // At-least-once at the queue level: a job whose effect ran just before the kill, but whose
    // completion was not recorded, runs again. At most the killed worker's concurrency (4).
    const repeated = [...fx.values()].filter((n) => n > 1).length;
    expect(repeated).toBeLessThanOrEqual(4);
    expect([...fx.values()].every((n) => n >= 1 && n <= 2)).toBe(true);

    b.signal('SIGTERM');
    api.signal('SIGTERM');
    await b.waitForExit(30_000);
    await api.waitForExit(30_000);
  });
});
