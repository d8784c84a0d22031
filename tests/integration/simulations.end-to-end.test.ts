import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { systemClock } from '../../shared/clock';
import type { ResolvedScenario } from '../../shared/contract/simulation';
import { upsertSimulationCheckpoint } from '../../shared/db/simulations-store';
import { createLocks } from '../../shared/locks';
import { createRedis } from '../../shared/redis';
import { simulationsQueue } from '../../queues/simulations';
import { buildProcessors } from '../../workers/processors/index';
import { createWorkerRuntime } from '../../workers/runtime';
import { createEngine } from '../../workers/simulation/engine';
import { BACKENDS, waitFor } from '../helpers/services';
import { call, startApi, type ApiUnderTest } from './api.harness';

/** The engine run to the end on this thread, for comparison with what the worker stored. */
function runDirectly(scenario: ResolvedScenario) {
  const engine = createEngine(scenario);
  while (!engine.step(1 << 16).done);
  return engine.result();
}

/**
 * POST /v1/simulations → outbox → BullMQ → run-simulation under `simulation:<id>` in a
 * worker thread → result; cancellation of a running run; resume from a stored checkpoint.
 * In-process api and worker runtime on real Redis and each database.
 */
describe.each(BACKENDS)('simulations end to end ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  const stops: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('sime2e') });
    const redis = createRedis(api.config.REDIS_URL, 'client');
    stops.push(() => redis.quit());
    const runtime = createWorkerRuntime({
      config: api.config,
      logger: api.logger,
      queues: [simulationsQueue],
      registry: buildProcessors({
        redis,
        prefix: api.prefix,
        db: api.db,
        logger: api.logger,
        config: api.config,
        clock: systemClock,
        migrations: await loadMigrations(),
        locks: createLocks({ redis, prefix: api.prefix, logger: api.logger }),
        queues: api.queues,
      }),
    });
    stops.unshift(() => runtime.stop());
    await runtime.start();
  });
  afterAll(async () => {
    for (const stop of stops) await stop().catch(() => undefined);
    await api?.close();
  });

  const post = (simulationId: string, scenario: unknown) =>
    call(api, '/v1/simulations', {
      method: 'POST',
      key: api.keys.write,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ simulation_id: simulationId, scenario }),
    });
  const get = async (id: string) => (await call(api, `/v1/simulations/${id}`, { key: api.keys.read })).body;
  const settled = (id: string, timeoutMs = 30_000) =>
    waitFor(
      async () => {
        const b = await get(id);
        return ['succeeded', 'failed', 'cancelled'].includes(b.status) ? b : undefined;
      },
      { timeoutMs, what: `simulation ${id} finished` },
    );

  it('a small run succeeds with the result the engine gives directly for the same seed', async () => {
    const scenario = {
      arrival: { process: 'poisson', rate_per_s: 180 },
      service: { distribution: 'exponential', mean_ms: 20 },
      servers: 4,
      customers: 200_000,
      warmup_customers: 1_000,
    };
    const r = await post('small-1', scenario);
    expect(r.status).toBe(202);
    const done = await settled('small-1');
    expect(done.status).toBe('succeeded');
    expect(done.progress).toBe(1);
    expect(done.attempts).toBe(1);
    expect(done.error).toBeNull();
    expect(done.events).toBeGreaterThan(0);
    expect(done.elapsed_ms).toBeGreaterThanOrEqual(0);
    const stored = await api.db.db
      .selectFrom('simulations')
      .select('result')
      .where('id', '=', 'small-1')
      .executeTakeFirstOrThrow();
    expect(stored.result).toBe(JSON.stringify(runDirectly(done.scenario)));
    expect(done.result.erlang_c).not.toBeNull();

    const again = await call(api, '/v1/simulations/small-1/cancel', { method: 'POST', key: api.keys.write });
    expect(again.status).toBe(409);
  });

  it('a running run is cancelled within 1 s of the request', async () => {
    const scenario = {
      arrival: { process: 'poisson', rate_per_s: 900 },
      service: { distribution: 'exponential', mean_ms: 4 },
      servers: 4,
      customers: 50_000_000,
    };
    expect((await post('long-1', scenario)).status).toBe(202);
    await waitFor(async () => (await get('long-1')).progress > 0, { what: 'long run progressing' });
    const asked = performance.now();
    const c = await call(api, '/v1/simulations/long-1/cancel', { method: 'POST', key: api.keys.write });
    expect(c.status).toBe(202);
    expect(c.body.status).toBe('running');
    const done = await waitFor(
      async () => {
        const b = await get('long-1');
        return b.status === 'cancelled' ? b : undefined;
      },
      { timeoutMs: 5_000, intervalMs: 20, what: 'long run cancelled' },
    );
    const latencyMs = performance.now() - asked;
    console.info(`simulation cancel latency: ${Math.round(latencyMs)} ms (request to status cancelled)`);
    expect(latencyMs).toBeLessThan(1_000);
    expect(done.progress).toBeLessThan(1);
    expect(done.result).toBeNull();
    const late = await call(api, '/v1/simulations/long-1/cancel', { method: 'POST', key: api.keys.write });
    expect(late.status).toBe(409);
  });

  it('a run with a stored checkpoint resumes from it and ends with the uninterrupted result', async () => {
    const scenario: ResolvedScenario = {
      arrival: { process: 'poisson', rate_per_s: 50 },
      service: { distribution: 'lognormal', mean_ms: 70, cv: 1.5 },
      servers: 4,
      customers: 300_000,
      patience_ms: 200,
      queue_capacity: 50,
      seed: 1234,
    };
    // An earlier holder (fence 1) got 40 % of the way and stored its checkpoint.
    const engine = createEngine(scenario);
    while (engine.finished < 120_000) engine.step(1_000);
    const cp = engine.checkpoint();
    await api.db.db
      .insertInto('simulations')
      .values({
        id: 'resume-1',
        status: 'running',
        scenario: JSON.stringify(scenario),
        attempts: 1,
        fence: 1,
        elapsed_ms: 1234,
        created_at: Date.now(),
        started_at: Date.now(),
      })
      .execute();
    expect(
      await upsertSimulationCheckpoint(api.db.db, {
        simulationId: 'resume-1',
        fence: 1,
        stateJson: JSON.stringify(cp),
        progressBp: 4_000,
        events: cp.events,
        now: Date.now(),
      }),
    ).toBe(true);
    await api.queues.add('simulations', 'run-simulation', { simulation_id: 'resume-1' }, 'sim-resume-1');
    const done = await settled('resume-1');
    expect(done.status).toBe('succeeded');
    expect(done.attempts).toBe(2);
    expect(done.elapsed_ms).toBeGreaterThanOrEqual(1234);
    const stored = await api.db.db
      .selectFrom('simulations')
      .select('result')
      .where('id', '=', 'resume-1')
      .executeTakeFirstOrThrow();
    expect(stored.result).toBe(JSON.stringify(runDirectly(scenario)));
    const resumed = api.logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'simulation resuming from a checkpoint' && l.simulation_id === 'resume-1');
    expect(resumed?.progress).toBe(0.4);
  });
});
