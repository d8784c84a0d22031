import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { z } from 'zod';
import { defineQueue } from '../../queues/definition';
import { noopQueue } from '../../queues/noop';
import { loadConfig, type Config } from '../../shared/config';
import { createDatabase } from '../../shared/db/database';
import { UnrestartableError } from '../../shared/errors';
import { DrainTimeoutError } from '../../shared/lifecycle';
import { createLogger } from '../../shared/logger';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { createNoopProcessor, noopEffectsKey } from '../../workers/processors/noop';
import { buildRegistry, type JobProcessor } from '../../workers/registry';
import { createWorkerRuntime, type WorkerRuntime, type WorkerRuntimeOptions } from '../../workers/runtime';
import { closedPort, startGate, testRedisUrl, uniquePrefix, waitFor } from '../helpers/services';

/** A queue for this test only: its `wait` job blocks until the test opens the job's gate. */
const gatedQueue = defineQueue({
  name: 'gated',
  jobs: { wait: z.object({ id: z.string() }) },
  defaultJobOptions: { attempts: 3 },
});

const prefix = uniquePrefix('worker-runtime');
const logger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
let redis: Redis;
let config: Config;
let noop: Queue;
let gated: Queue;

// Gated jobs: a test opens the gate of a job id; `entered` records which jobs started running.
const gates = new Map<string, ReturnType<typeof startGate>>();
const entered = new Set<string>();
const gateFor = (id: string) => {
  let g = gates.get(id);
  if (!g) gates.set(id, (g = startGate()));
  return g;
};
const gatedProcessor: JobProcessor<{ id: string }> = async (job) => {
  entered.add(job.data.id);
  await gateFor(job.data.id).wait();
  return 'done';
};

const runtimes: WorkerRuntime[] = [];
function makeRuntime(overrides: Partial<WorkerRuntimeOptions> = {}): WorkerRuntime {
  const runtime = createWorkerRuntime({
    config,
    logger,
    queues: [noopQueue, gatedQueue],
    registry: buildRegistry({
      noop: { noop: createNoopProcessor({ redis, prefix }) },
      gated: { wait: gatedProcessor },
    }),
    drainTimeoutMs: 10_000,
    ...overrides,
  });
  runtimes.push(runtime);
  return runtime;
}

async function jobState(queue: Queue, id: string): Promise<string> {
  const job = await queue.getJob(id);
  return job ? await job.getState() : 'missing';
}

async function effects(id: string): Promise<number> {
  return Number((await redis.hget(noopEffectsKey(prefix), id)) ?? 0);
}

/** Redis clients whose name carries this file's prefix (runtime connections, BullMQ blocking connections). */
async function ourClients(): Promise<string[]> {
  const list = (await redis.client('LIST')) as string;
  return list
    .split('\n')
    .map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '')
    .filter((name) => name.startsWith(prefix));
}

beforeAll(async () => {
  redis = createRedis(testRedisUrl(), 'client');
  config = loadConfig({ TASKYARD_ENV: 'test', REDIS_URL: testRedisUrl(), REDIS_PREFIX: prefix });
  noop = new Queue(noopQueue.name, {
    connection: redis,
    prefix,
    defaultJobOptions: noopQueue.defaultJobOptions,
  });
  gated = new Queue(gatedQueue.name, {
    connection: redis,
    prefix,
    defaultJobOptions: gatedQueue.defaultJobOptions,
  });
});

afterEach(async () => {
  for (const g of gates.values()) g.open();
  // Runtimes a test left running; a rejection here is the outcome a test already asserted.
  await Promise.allSettled(runtimes.splice(0).map((r) => r.stop()));
  gates.clear();
  entered.clear();
  // Every connection the runtimes opened is closed again.
  await waitFor(async () => (await ourClients()).length === 0, { what: 'runtime connections to close' });
  await noop.obliterate({ force: true });
  await gated.obliterate({ force: true });
  await redis.del(noopEffectsKey(prefix));
});

afterAll(async () => {
  await noop.close();
  await gated.close();
  await deleteKeysWithPrefix(redis, prefix);
  await redis.quit();
});

describe('worker runtime lifecycle', () => {
  it('twenty concurrent start() calls create exactly one BullMQ Worker per queue', async () => {
    const runtime = makeRuntime();
    const racers = startGate();
    const starts = Array.from({ length: 20 }, async () => {
      await racers.wait();
      return runtime.start();
    });
    racers.open();
    await Promise.all(starts);
    expect(runtime.state).toBe('running');
    expect(runtime.workers).toHaveLength(2);
    expect((await noop.getWorkers()).length).toBe(1);
    expect((await gated.getWorkers()).length).toBe(1);
    await runtime.stop();
    expect(runtime.state).toBe('stopped');
  });

  it('stop() drains an active job: the job completes and stop resolves after it', async () => {
    const runtime = makeRuntime();
    await runtime.start();
    await gated.add('wait', { id: 'd1' }, { jobId: 'd1' });
    await waitFor(() => entered.has('d1'), { what: 'job d1 to start' });

    let stopped = false;
    const stop = runtime.stop().then(() => (stopped = true));
    try {
      await waitFor(() => runtime.state === 'stopping', { what: 'the runtime to be stopping' });
      expect(await jobState(gated, 'd1')).toBe('active');
      expect(stopped).toBe(false);
    } finally {
      gateFor('d1').open();
    }
    await stop;
    expect(runtime.state).toBe('stopped');
    expect(await jobState(gated, 'd1')).toBe('completed');
  });

  it('stop() takes no new jobs once draining', async () => {
    const runtime = makeRuntime();
    await runtime.start();
    await gated.add('wait', { id: 'first' }, { jobId: 'first' });
    await waitFor(() => entered.has('first'), { what: 'the first job to start' });
    const stop = runtime.stop();
    try {
      await waitFor(() => runtime.state === 'stopping', { what: 'the runtime to be stopping' });
      await gated.add('wait', { id: 'late' }, { jobId: 'late' });
    } finally {
      gateFor('first').open();
      gateFor('late').open();
    }
    await stop;
    expect(entered.has('late')).toBe(false);
    expect(await jobState(gated, 'late')).toBe('waiting');
  });

  it('a job outliving the drain timeout makes stop() reject with DrainTimeoutError, goes back to the queue, and start() then throws UnrestartableError', async () => {
    const runtime = makeRuntime({ drainTimeoutMs: 300 });
    await runtime.start();
    await noop.add('noop', { hold_ms: 60_000 }, { jobId: 'long' });
    await waitFor(async () => (await jobState(noop, 'long')) === 'active', { what: 'job long to be active' });

    await expect(runtime.stop()).rejects.toBeInstanceOf(DrainTimeoutError);
    expect(runtime.state).toBe('unrestartable');
    await expect(runtime.start()).rejects.toBeInstanceOf(UnrestartableError);

    // Interrupted, not failed: back in the queue with no attempt spent and no effect recorded.
    const job = await noop.getJob('long');
    expect(await job!.getState()).toBe('waiting');
    expect(job!.attemptsMade).toBe(0);
    expect(await effects('long')).toBe(0);
  });

  it('a job with an unknown name fails alone, without retries, naming the known jobs; the next job completes', async () => {
    const runtime = makeRuntime();
    await runtime.start();
    await noop.add('mystery', {}, { jobId: 'unknown-1', attempts: 5 });
    await waitFor(async () => (await jobState(noop, 'unknown-1')) === 'failed', {
      what: 'job unknown-1 to fail',
    });
    const failed = await noop.getJob('unknown-1');
    expect(failed!.attemptsMade).toBe(1);
    expect(failed!.failedReason).toBe('queue "noop" has no processor for job "mystery"; known jobs: noop');

    await noop.add('noop', { seq: 1 }, { jobId: 'after-unknown' });
    await waitFor(async () => (await jobState(noop, 'after-unknown')) === 'completed', {
      what: 'job after-unknown to complete',
    });
    expect(await effects('after-unknown')).toBe(1);
    expect(runtime.state).toBe('running');
  });

  it('a job whose payload fails its schema fails without retries and a clear reason', async () => {
    const runtime = makeRuntime();
    await runtime.start();
    await noop.add('noop', { seq: -1 }, { jobId: 'invalid-1', attempts: 5 });
    await waitFor(async () => (await jobState(noop, 'invalid-1')) === 'failed', {
      what: 'job invalid-1 to fail',
    });
    const failed = await noop.getJob('invalid-1');
    expect(failed!.attemptsMade).toBe(1);
    expect(failed!.failedReason).toMatch(/^invalid payload for job "noop" on queue "noop": seq: /);
    expect(await effects('invalid-1')).toBe(0);
  });

  it('each completed noop job records its effect exactly once', async () => {
    const runtime = makeRuntime();
    await runtime.start();
    await noop.addBulk(
      Array.from({ length: 50 }, (_, i) => ({ name: 'noop', data: { seq: i }, opts: { jobId: `e-${i}` } })),
    );
    await waitFor(async () => (await noop.getCompletedCount()) === 50, { what: '50 jobs to complete' });
    const counts = await redis.hgetall(noopEffectsKey(prefix));
    expect(Object.keys(counts)).toHaveLength(50);
    expect(Object.values(counts).every((v) => v === '1')).toBe(true);
  });

  it('a cleanly stopped runtime starts again with new workers', async () => {
    const runtime = makeRuntime();
    await runtime.start();
    const first = runtime.workers;
    await runtime.stop();
    await runtime.start();
    expect(runtime.workers).not.toBe(first);
    expect((await noop.getWorkers()).length).toBe(1);
    await noop.add('noop', {}, { jobId: 'after-restart' });
    await waitFor(async () => (await jobState(noop, 'after-restart')) === 'completed', {
      what: 'job after-restart to complete',
    });
  });

  it('a job the database could not serve is delayed without spending an attempt, then completes', async () => {
    // A real driver error: Postgres on a port where nothing listens (ECONNREFUSED).
    const down = await createDatabase(`postgres://postgres@127.0.0.1:${await closedPort()}/test`);
    const outageQueue = defineQueue({
      name: 'outage',
      jobs: { work: z.object({ id: z.string() }) },
      // One attempt: a failure that spent it would fail the job for good.
      defaultJobOptions: { attempts: 1 },
    });
    let calls = 0;
    const processor: JobProcessor<{ id: string }> = async () => {
      calls++;
      if (calls === 1) await sql`select 1`.execute(down.db);
      return 'done';
    };
    const lines: Array<{ msg?: string; delay_ms?: number }> = [];
    const runtime = makeRuntime({
      queues: [outageQueue],
      registry: buildRegistry({ outage: { work: processor } }),
      logger: createLogger({ level: 'warn' }, { write: (l: string) => void lines.push(JSON.parse(l)) }),
    });
    const queue = new Queue(outageQueue.name, {
      connection: redis,
      prefix,
      defaultJobOptions: { attempts: 1 },
    });
    try {
      await runtime.start();
      await queue.add('work', { id: 'o-1' }, { jobId: 'o-1' });
      await waitFor(async () => (await jobState(queue, 'o-1')) === 'completed', {
        what: 'the delayed job completed',
        timeoutMs: 20_000,
        intervalMs: 100,
      });
      const job = (await queue.getJob('o-1'))!;
      expect(job.returnvalue).toBe('done');
      expect(job.attemptsMade).toBe(1);
      expect(calls).toBe(2);
      expect(
        lines.filter((l) => l.msg === 'database unavailable: job delayed without spending an attempt'),
      ).toEqual([expect.objectContaining({ delay_ms: 5000 })]);
    } finally {
      await runtime.stop();
      await queue.obliterate({ force: true });
      await queue.close();
      await down.close();
    }
  });
});
