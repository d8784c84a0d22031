import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedScenario, SimulationResult } from '../../shared/contract/simulation';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { runInThread } from '../../workers/simulation/run-in-thread';
import { assertNoLeakedChildren, killAllChildren, spawnTsx, type SpawnedProcess } from '../helpers/processes';
import { testRedisUrl, testSqliteUrl, uniquePrefix, waitFor } from '../helpers/services';

/**
 * A worker is killed with SIGKILL in the middle of a simulation, after it stored a
 * checkpoint. Another worker process takes the job over (BullMQ stalled recovery, then the
 * `simulation:<id>` lock once the dead holder's lease lapses), resumes from the checkpoint
 * and stores the result an uninterrupted run of the same scenario and seed gives.
 */

const ADMIN_KEY = 'ty_e2e_admin_key_0123456789abcdefghij';

// Several seconds of work, so the kill lands mid-run, after the first checkpoint (every 300 ms here).
const SCENARIO: ResolvedScenario = {
  arrival: { process: 'poisson', rate_per_s: 900 },
  service: { distribution: 'lognormal', mean_ms: 60, cv: 2 },
  servers: 64,
  customers: 25_000_000,
  patience_ms: 30,
  seed: 20_260_101,
};

let redis: Redis;
let db: DatabaseHandle | undefined;
let prefix: string;
let databaseUrl: string;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TASKYARD_ENV: 'test',
    TASKYARD_ADMIN_KEY: ADMIN_KEY,
    DATABASE_URL: databaseUrl,
    REDIS_URL: testRedisUrl(),
    REDIS_PREFIX: prefix,
    LOG_LEVEL: 'info',
    WORKER_LOCK_DURATION_MS: '2000',
    WORKER_STALLED_INTERVAL_MS: '1000',
    // Frequent checkpoints and a short single-runner lock: the test does not depend on how
    // fast this machine runs the engine, and the takeover does not wait 30 s.
    SIMULATION_CHECKPOINT_EVERY_MS: '300',
    LOCK_TTL_MS: '3000',
    ...extra,
  };
}

async function startWorker(name: string): Promise<SpawnedProcess> {
  const proc = spawnTsx(name, 'workers/main.ts', ['--queues', 'simulations'], env());
  await proc.waitForLog((x) => x.msg === 'worker ready', { what: `${name} ready`, timeoutMs: 30_000 });
  return proc;
}

beforeAll(() => {
  redis = createRedis(testRedisUrl(), 'client');
});
afterEach(async () => {
  await assertNoLeakedChildren();
  await db?.close();
  db = undefined;
  await deleteKeysWithPrefix(redis, prefix);
});
afterAll(async () => {
  await killAllChildren();
  await redis.quit();
});

describe('simulation kill and resume', () => {
  it('a worker killed mid-run is replaced by another that resumes from the checkpoint and stores the uninterrupted result', async () => {
    prefix = uniquePrefix('simkill');
    databaseUrl = testSqliteUrl('simkill');
    const t0 = performance.now();
    const mark = () => Math.round(performance.now() - t0);
    const timings: Record<string, number> = {};

    const api = spawnTsx('api', 'api/server.ts', [], env({ PORT: '0' }));
    const listening = await api.waitForLog((x) => x.msg === 'api listening', {
      what: 'api listening',
      timeoutMs: 30_000,
    });
    const url = `http://127.0.0.1:${String(listening.port)}`;
    const workerA = await startWorker('worker-a');
    timings.started = mark();

    const res = await fetch(`${url}/v1/simulations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ simulation_id: 'kill-1', scenario: SCENARIO }),
    });
    expect(res.status).toBe(202);

    await workerA.waitForLog((x) => x.msg === 'simulation checkpoint saved', {
      what: 'a checkpoint stored',
      timeoutMs: 60_000,
    });
    timings.first_checkpoint = mark();
    await workerA.kill();
    timings.killed = mark();

    db = await createDatabase(databaseUrl);
    const atKill = await db.db
      .selectFrom('simulations')
      .selectAll()
      .where('id', '=', 'kill-1')
      .executeTakeFirstOrThrow();
    expect(atKill.status).toBe('running');
    const checkpoint = await db.db
      .selectFrom('simulation_checkpoints')
      .selectAll()
      .where('simulation_id', '=', 'kill-1')
      .executeTakeFirstOrThrow();
    expect(checkpoint.progress_bp).toBeGreaterThan(0);

    const workerB = await startWorker('worker-b');
    // The uninterrupted run, off this thread, while worker B waits for the dead holder's lease.
    const expected: Promise<SimulationResult> = runInThread(SCENARIO);

    const resumed = await workerB.waitForLog((x) => x.msg === 'simulation resuming from a checkpoint', {
      what: 'resume from the checkpoint',
      timeoutMs: 60_000,
    });
    timings.resumed = mark();
    expect(resumed.progress).toBeGreaterThan(0);
    expect(resumed.progress).toBe(Number(checkpoint.progress_bp) / 10_000);

    const done = await waitFor(
      async () => {
        const row = await db!.db
          .selectFrom('simulations')
          .selectAll()
          .where('id', '=', 'kill-1')
          .executeTakeFirstOrThrow();
        return row.status === 'running' || row.status === 'queued' ? undefined : row;
      },
      { timeoutMs: 90_000, intervalMs: 200, what: 'simulation finished' },
    );
    timings.finished = mark();
    expect(done.status).toBe('succeeded');
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(done.result).toBe(JSON.stringify(await expected));
    timings.compared = mark();
    console.info(
      `simulations kill/resume e2e timings (ms since start): ${JSON.stringify(timings)}; progress at the checkpoint ${Number(checkpoint.progress_bp) / 100}%`,
    );

    workerB.signal('SIGTERM');
    api.signal('SIGTERM');
    expect((await workerB.waitForExit(30_000)).code).toBe(0);
    expect((await api.waitForExit(30_000)).code).toBe(0);
  }, 180_000);
});
