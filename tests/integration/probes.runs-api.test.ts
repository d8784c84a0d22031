import http from 'node:http';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { systemClock } from '../../shared/clock';
import { createLocks } from '../../shared/locks';
import { createRedis } from '../../shared/redis';
import { probesQueue } from '../../queues/probes';
import { createWorkerRuntime } from '../../workers/runtime';
import { buildProcessors } from '../../workers/processors/index';
import { BACKENDS, waitFor } from '../helpers/services';
import { allPages, call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

/**
 * POST /v1/probes/runs → outbox → BullMQ → probe-cycle under the `probes` lock → samples and
 * health; the `probes` schedule runs cycles of its own. In-process api and worker runtime on
 * real Redis and each database; the probed target is a loopback server inside the test.
 */
describe.each(BACKENDS)('probe runs through the api and a worker ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let server: http.Server;
  let port = 0;
  let stopWorker: () => Promise<void> = async () => undefined;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('probe_runs') });
    server = http.createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    const redis = createRedis(api.config.REDIS_URL, 'client');
    const runtime = createWorkerRuntime({
      config: api.config,
      logger: api.logger,
      queues: [probesQueue],
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
    await runtime.start();
    stopWorker = async () => {
      await runtime.stop();
      await redis.quit();
    };
  });
  afterAll(async () => {
    await stopWorker();
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await api?.close();
  });

  const postRun = (key?: string) =>
    call(api, '/v1/probes/runs', {
      method: 'POST',
      key: api.keys.write,
      headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      body: '{}',
    });
  const finished = (id: string) =>
    waitFor(
      async () => {
        const r = await call(api, `/v1/probes/runs/${id}`, { key: api.keys.read });
        return ['succeeded', 'failed', 'skipped'].includes(r.body?.status as string) ? r.body : undefined;
      },
      { timeoutMs: 20_000, what: `probe run ${id} finished` },
    );

  it('a run needs an Idempotency-Key, answers 202 with Location, replays, and probes every enabled provider', async () => {
    const created = await call(api, '/v1/providers', {
      method: 'POST',
      key: api.keys.admin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'local', url: `http://127.0.0.1:${port}/health`, timeout_ms: 1000 }),
    });
    expect(created.status).toBe(201);
    expectProblemShape(await postRun(), 'idempotency-key-missing', 400);

    const r = await postRun('probe-now-1');
    expect(r.status).toBe(202);
    expect(r.headers.get('location')).toBe(`/v1/probes/runs/${r.body.id}`);
    expect(r.body).toMatchObject({
      status: 'queued',
      trigger: 'manual',
      probed: 0,
      failed: 0,
      job_id: `probe-run-${r.body.id}`,
    });
    const again = await postRun('probe-now-1');
    expect(again.status).toBe(202);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body.id).toBe(r.body.id);

    const done = await finished(r.body.id as string);
    expect(done).toMatchObject({ status: 'succeeded', probed: 1, failed: 0, error: null });
    expect(done.started_at).toMatch(/Z$/);
    expect(done.finished_at).toMatch(/Z$/);
    const runs = await api.db.db
      .selectFrom('probe_runs')
      .selectAll()
      .where('trigger', '=', 'manual')
      .execute();
    expect(runs).toHaveLength(1);

    const health = await call(api, `/v1/providers/${created.body.id}/health`, { key: api.keys.read });
    expect(health.body).toMatchObject({ state: 'healthy', consecutive_failures: 0 });
    expect(health.body.recent).toHaveLength(1);
    expect(health.body.recent[0]).toMatchObject({ ok: true, status_code: 200, run_id: r.body.id });
    expectProblemShape(
      await call(api, `/v1/probes/runs/${crypto.randomUUID()}`, { key: api.keys.read }),
      'not-found',
      404,
    );
  });

  it('the probes schedule, set to 1 s, runs scheduled cycles that record their own runs', async () => {
    const put = await call(api, '/v1/schedules/probes', {
      method: 'PUT',
      key: api.keys.admin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ every_ms: 1000 }),
    });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({ name: 'probes', job: 'probe-cycle', every_ms: 1000, in_redis: true });
    const scheduled = await waitFor(
      async () => {
        const rows = await api.db.db
          .selectFrom('probe_runs')
          .selectAll()
          .where('trigger', '=', 'scheduled')
          .where('status', '=', 'succeeded')
          .execute();
        return rows.length >= 2 ? rows : undefined;
      },
      { timeoutMs: 20_000, what: 'two scheduled probe runs' },
    );
    expect(new Set(scheduled.map((r) => r.id)).size).toBe(scheduled.length);
    for (const r of scheduled) expect(Number(r.probed)).toBe(1);
    // Scheduled cycles have ids nobody was told: GET /v1/probes/runs lists them, newest first.
    const pages = await allPages(api, '/v1/probes/runs', api.keys.read, 2);
    const listed = pages.map((r) => r.id);
    expect(listed).toEqual(expect.arrayContaining(scheduled.map((r) => r.id)));
    // A scheduler's tick ran them: no job id of their own to look up.
    for (const r of pages as Array<{ trigger?: string; job_id?: string | null }>) {
      if (r.trigger === 'scheduled') expect(r.job_id).toBeNull();
    }
    expect(new Set(listed).size).toBe(listed.length);
    const off = await call(api, '/v1/schedules/probes', {
      method: 'PUT',
      key: api.keys.admin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ every_ms: 1000, enabled: false }),
    });
    expect(off.body).toMatchObject({ enabled: false, in_redis: false });
  });
});
