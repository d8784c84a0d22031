import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { noopQueue } from '../../queues/noop';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { noopEffectsKey } from '../../workers/processors/noop';
import { assertNoLeakedChildren, killAllChildren, spawnTsx, type SpawnedProcess } from '../helpers/processes';
import { closedPort, testRedisUrl, testSqliteUrl, uniquePrefix, waitFor } from '../helpers/services';

/**
 * The real worker process (workers/main.ts) under SIGTERM/SIGINT (DESIGN.md §4.4): a job that
 * outlives DRAIN_TIMEOUT_MS makes the process exit non-zero, the job goes back to its queue,
 * and another worker process runs it to completion, exactly once.
 */

const EXIT_DRAIN_TIMEOUT = 70;
const EXIT_SECOND_SIGNAL = 130;

const prefix = uniquePrefix('worker-drain');
let redis: Redis;
let queue: Queue;

function startWorker(name: string, env: Record<string, string> = {}, queues = 'noop'): SpawnedProcess {
  return spawnTsx(name, 'workers/main.ts', ['--queues', queues], {
    ...process.env,
    TASKYARD_ENV: 'test',
    DATABASE_URL: testSqliteUrl('worker-drain'),
    REDIS_URL: testRedisUrl(),
    REDIS_PREFIX: prefix,
    DRAIN_TIMEOUT_MS: '500',
    // debug: the test waits for the 'job active' line.
    LOG_LEVEL: 'debug',
    ...env,
  });
}

const isReady = (l: Record<string, unknown>) => l.msg === 'worker ready';
const isActive = (id: string) => (l: Record<string, unknown>) => l.msg === 'job active' && l.job_id === id;

async function jobState(id: string): Promise<string> {
  const job = await queue.getJob(id);
  return job ? await job.getState() : 'missing';
}

beforeAll(() => {
  redis = createRedis(testRedisUrl(), 'client');
  queue = new Queue(noopQueue.name, {
    connection: redis,
    prefix,
    defaultJobOptions: noopQueue.defaultJobOptions,
  });
});

afterEach(async () => {
  await assertNoLeakedChildren();
});

afterAll(async () => {
  await killAllChildren();
  await queue.close();
  await deleteKeysWithPrefix(redis, prefix);
  await redis.quit();
});

describe('worker process drain', () => {
  it('SIGTERM with a job outliving the drain timeout exits non-zero; a second worker completes the job exactly once', async () => {
    const first = startWorker('worker-1');
    const ready = await first.waitForLog(isReady, { what: 'worker ready', timeoutMs: 30_000 });
    expect(ready.queues).toEqual(['noop']);
    expect(ready.pid).toBe(first.pid);

    await queue.add('noop', { hold_ms: 3_000 }, { jobId: 'held' });
    await first.waitForLog(isActive('held'), { what: 'job held to be active' });

    first.signal('SIGTERM');
    const exit = await first.waitForExit(15_000);
    expect(exit).toEqual({ code: EXIT_DRAIN_TIMEOUT, signal: null });
    expect(
      first.logs.filter((l) => l.component === 'worker-runtime' && l.to === 'unrestartable'),
    ).toHaveLength(1);
    expect(first.logs.some((l) => l.drain_timeout_ms === 500)).toBe(true);
    // Handed back, not failed: no attempt spent, no effect recorded.
    expect(await jobState('held')).toBe('waiting');
    expect(Number(await redis.hget(noopEffectsKey(prefix), 'held'))).toBe(0);

    const second = startWorker('worker-2');
    await second.waitForLog(isActive('held'), {
      what: 'job held to be taken by the second worker',
      timeoutMs: 30_000,
    });
    await second.waitForLog((l) => l.msg === 'job completed' && l.job_id === 'held', {
      what: 'job held to complete',
      timeoutMs: 15_000,
    });
    expect(await jobState('held')).toBe('completed');
    expect(await redis.hget(noopEffectsKey(prefix), 'held')).toBe('1');
    const job = await queue.getJob('held');
    expect(job!.attemptsMade).toBe(1);

    // Nothing active: a clean drain exits 0.
    second.signal('SIGTERM');
    expect(await second.waitForExit(15_000)).toEqual({ code: 0, signal: null });
    expect(second.logs.some((l) => l.to === 'stopped')).toBe(true);
  });

  it('a second signal during the drain exits at once', async () => {
    const worker = startWorker('worker-impatient', { DRAIN_TIMEOUT_MS: '60000' });
    await worker.waitForLog(isReady, { what: 'worker ready', timeoutMs: 30_000 });
    await queue.add('noop', { hold_ms: 120_000 }, { jobId: 'stuck' });
    await worker.waitForLog(isActive('stuck'), { what: 'job stuck to be active' });

    const signalledAt = Date.now();
    worker.signal('SIGTERM');
    await worker.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('shutdown requested'), {
      what: 'the drain to begin',
    });
    // Signals within a second of the first count as the same Ctrl-C (shared/signals.ts), so keep
    // signalling until one lands as the second.
    await waitFor(
      () => {
        worker.signal('SIGINT');
        return !worker.running();
      },
      { intervalMs: 200, timeoutMs: 10_000, what: 'the worker to exit on the second signal' },
    );
    expect(await worker.exited).toEqual({ code: EXIT_SECOND_SIGNAL, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    expect(worker.logs.some((l) => l.msg === 'second shutdown signal: exiting at once')).toBe(true);
    expect(worker.logs.some((l) => l.msg === 'job completed')).toBe(false);
  });

  it('SIGTERM while Redis is unreachable still ends the worker (drain timeout, bounded close), without a second signal', async () => {
    // A Redis of this test's own, so it can be stopped under the worker.
    const port = await closedPort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-redis-down-'));
    const server = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    );
    try {
      const url = `redis://127.0.0.1:${port}`;
      const probe = createRedis(url, 'client');
      probe.on('error', () => undefined); // refused until the server is up, and after it stops
      await waitFor(async () => (await probe.ping()) === 'PONG', { what: 'private redis up' });
      // Every queue, so the schedule sync and the maintenance ticks hold connections too.
      const worker = startWorker(
        'redis-down',
        { REDIS_URL: url, DRAIN_TIMEOUT_MS: '1000' },
        'noop,backups,simulations,pruning,probes,maintenance',
      );
      await worker.waitForLog(isReady, { what: 'worker ready', timeoutMs: 30_000 });
      await probe.shutdown('NOSAVE').catch(() => undefined);
      probe.disconnect();
      if (server.exitCode === null && server.signalCode === null) {
        await new Promise((resolve) => server.once('exit', resolve));
      }

      worker.signal('SIGTERM');
      // Drain timeout (1 s) + bounded force close (5 s) + bounded close of connections (5 s).
      const exit = await worker.waitForExit(30_000);
      // 70: the drain timed out (BullMQ cannot close its workers without Redis); 0 if it did not.
      expect([0, EXIT_DRAIN_TIMEOUT]).toContain(exit.code);
      expect(worker.logs.some((l) => l.msg === 'second shutdown signal: exiting at once')).toBe(false);
    } finally {
      if (server.exitCode === null) server.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
  it('a worker that does not serve maintenance warns once when no worker does, once more when it is gone again, and says when one is back', async () => {
    const watchEnv = { RECONCILE_AFTER_MS: '300', SCHEDULE_CHECK_SECONDS: '1', LOG_LEVEL: 'info' };
    const about = (msg: RegExp) => (w: SpawnedProcess) =>
      w.logs.filter((l) => l.queue === 'maintenance' && msg.test(String(l.msg)));
    const warnings = about(/^no worker serves the maintenance queue/);
    const recoveries = about(/^a worker serves the maintenance queue again/);
    const seen = (what: string, lines: () => unknown[], n: number) =>
      waitFor(() => lines().length === n || undefined, { timeoutMs: 30_000, what });
    const alone = startWorker('noop-alone', watchEnv);
    await seen('the maintenance warning', () => warnings(alone), 1);
    expect(warnings(alone)[0]).toMatchObject({ level: 40 });
    expect(String(warnings(alone)[0]!.msg)).toContain('--queues maintenance');

    const maintenance = startWorker('maintenance', watchEnv, 'maintenance');
    await seen('the maintenance queue served again', () => recoveries(alone), 1);
    expect(warnings(maintenance)).toHaveLength(0);

    // The maintenance worker goes away later: reported again, once.
    maintenance.signal('SIGTERM');
    expect(await maintenance.waitForExit(15_000)).toEqual({ code: 0, signal: null });
    await seen('the second maintenance warning', () => warnings(alone), 2);
    expect(recoveries(alone)).toHaveLength(1);
    alone.signal('SIGTERM');
    expect(await alone.waitForExit(15_000)).toEqual({ code: 0, signal: null });
  });
});
