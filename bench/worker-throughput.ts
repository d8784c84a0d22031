/**
 * No-op jobs per second through the taskyard worker runtime (registry, payload
 * validation, lifecycle, logging at the queue's levels; a second variant logs each
 * completion at info, as the domain queues do) next to a raw BullMQ
 * Worker with the same concurrency on the same Redis. Variants alternate, in an order
 * rotated every round, over nine rounds, median reported, so drift on the machine and a
 * hiccup during one run (this shared host has them) affect both alike.
 */
import { Queue, Worker } from 'bullmq';
import { pino } from 'pino';
import { createLogger } from '../shared/logger';
import { createRedis, deleteKeysWithPrefix } from '../shared/redis';
import { loadConfig } from '../shared/config';
import { noopQueue } from '../queues/noop';
import { createWorkerRuntime } from '../workers/runtime';
import { buildRegistry } from '../workers/registry';
import type { Figure } from './results';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

async function fill(prefix: string, jobs: number): Promise<void> {
  const conn = createRedis(REDIS_URL, 'client');
  const q = new Queue(noopQueue.name, { connection: conn, prefix });
  for (let i = 0; i < jobs; i += 1000) {
    const n = Math.min(1000, jobs - i);
    await q.addBulk(
      Array.from({ length: n }, (_, k) => ({
        name: 'noop',
        data: { seq: i + k },
        opts: { ...noopQueue.defaultJobOptions, jobId: `n-${i + k}` },
      })),
    );
  }
  await q.close();
  conn.disconnect();
}

async function waitCompleted(prefix: string, jobs: number): Promise<void> {
  const conn = createRedis(REDIS_URL, 'client');
  const q = new Queue(noopQueue.name, { connection: conn, prefix });
  try {
    for (;;) {
      const c = await q.getCompletedCount();
      if (c >= jobs) return;
      const failed = await q.getFailedCount();
      if (failed > 0) throw new Error(`${failed} jobs failed during the benchmark`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await q.close();
    conn.disconnect();
  }
}

export async function runRaw(jobs: number, concurrency: number): Promise<number> {
  const prefix = `bench-raw-${process.pid}-${Date.now()}`;
  await fill(prefix, jobs);
  const conn = createRedis(REDIS_URL, 'worker');
  const t0 = performance.now();
  const w = new Worker(noopQueue.name, async () => undefined, { connection: conn, prefix, concurrency });
  await waitCompleted(prefix, jobs);
  const secs = (performance.now() - t0) / 1000;
  await w.close();
  conn.disconnect();
  await cleanup(prefix);
  return jobs / secs;
}

/**
 * @param completedAt level of the per-job `job completed` line: the noop queue's own (debug, as
 *   for every high-volume queue) or info (as the domain queues log it), to show its cost.
 */
export async function runTaskyard(
  jobs: number,
  concurrency: number,
  completedAt: 'debug' | 'info' = 'debug',
): Promise<number> {
  const prefix = `bench-ty-${process.pid}-${Date.now()}`;
  await fill(prefix, jobs);
  const config = loadConfig({
    ...process.env,
    TASKYARD_ENV: 'test',
    REDIS_URL,
    REDIS_PREFIX: prefix,
    NOOP_CONCURRENCY: String(concurrency),
  });
  // Real info-level logging of every transition, written to /dev/null so the terminal is not the bottleneck.
  const logger = createLogger(
    { level: 'info', name: 'bench' },
    pino.destination({ dest: '/dev/null', sync: false }),
  );
  const registry = buildRegistry({ noop: { noop: async () => undefined } });
  const t0 = performance.now();
  const runtime = createWorkerRuntime({
    config,
    logger,
    queues: [{ ...noopQueue, jobLogLevel: completedAt }],
    registry,
    redisUrl: REDIS_URL,
    prefix,
    concurrency: { noop: concurrency },
    drainTimeoutMs: 30_000,
  });
  await runtime.start();
  await waitCompleted(prefix, jobs);
  const secs = (performance.now() - t0) / 1000;
  await runtime.stop();
  await cleanup(prefix);
  return jobs / secs;
}

async function cleanup(prefix: string): Promise<void> {
  const conn = createRedis(REDIS_URL, 'client');
  await deleteKeysWithPrefix(conn, prefix);
  conn.disconnect();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function benchWorkerThroughput(
  opts = { jobs: 30_000, concurrency: 16, rounds: 9 },
): Promise<Figure[]> {
  const raw: number[] = [];
  const ty: number[] = [];
  const tyInfo: number[] = [];
  // Warm-up round (JIT, Redis scripts) not counted.
  await runRaw(1000, opts.concurrency);
  await runTaskyard(1000, opts.concurrency);
  const variants = [
    async () => raw.push(await runRaw(opts.jobs, opts.concurrency)),
    async () => ty.push(await runTaskyard(opts.jobs, opts.concurrency)),
    async () => tyInfo.push(await runTaskyard(opts.jobs, opts.concurrency, 'info')),
  ];
  for (let r = 0; r < opts.rounds; r++) {
    for (let i = 0; i < variants.length; i++) await variants[(r + i) % variants.length]!();
    console.log(
      `  round ${r + 1}: raw ${raw.at(-1)!.toFixed(0)} jobs/s, taskyard ${ty.at(-1)!.toFixed(0)} jobs/s, with an info line per job ${tyInfo.at(-1)!.toFixed(0)} jobs/s`,
    );
  }
  const reference = { name: 'raw BullMQ Worker, same concurrency and Redis', value: median(raw) };
  return [
    {
      name: `no-op jobs through the taskyard worker runtime (concurrency ${opts.concurrency}, ${opts.jobs} jobs, median of ${opts.rounds})`,
      value: median(ty),
      unit: 'jobs/s',
      reference,
      targetRatio: 0.9,
    },
    {
      name: 'the same with an info `job completed` line per job (as the backups, simulations, pruning and probes queues log)',
      value: median(tyInfo),
      unit: 'jobs/s',
      reference,
    },
  ];
}
