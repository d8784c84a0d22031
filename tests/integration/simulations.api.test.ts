import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, startGate } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

/**
 * POST/GET /v1/simulations and cancel without a worker: the simulation_id claim is the
 * insert itself, an Idempotency-Key is checked first, every scenario problem is listed.
 */
describe.each(BACKENDS)('simulations api ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('simapi') });
  });
  afterAll(async () => {
    await api?.close();
  });

  const scenario = {
    arrival: { process: 'poisson', rate_per_s: 100 },
    service: { distribution: 'exponential', mean_ms: 20 },
    servers: 4,
    customers: 1000,
  };
  const post = (body: unknown, idempotencyKey?: string) =>
    call(api, '/v1/simulations', {
      method: 'POST',
      key: api.keys.write,
      headers: {
        'content-type': 'application/json',
        ...(idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey }),
      },
      body: JSON.stringify(body),
    });
  const cancel = (id: string) =>
    call(api, `/v1/simulations/${id}/cancel`, { method: 'POST', key: api.keys.write });
  const rowsWithId = async (id: string) =>
    api.db.db.selectFrom('simulations').selectAll().where('id', '=', id).execute();

  it('200 concurrent POSTs of one simulation_id give exactly one 202 and 199 409 simulation-exists, one row, one job', async () => {
    const id = 'race-1';
    const gate = startGate();
    const racers = Array.from({ length: 200 }, async (_, i) => {
      await gate.wait();
      // Different scenarios, different or no keys: the id alone decides.
      const key = i % 2 === 0 ? `race-key-${i}` : undefined;
      return post({ simulation_id: id, scenario: { ...scenario, servers: 1 + (i % 8) } }, key);
    });
    gate.open();
    const results = await Promise.all(racers);
    const accepted = results.filter((r) => r.status === 202);
    const conflicts = results.filter((r) => r.status === 409);
    expect(accepted).toHaveLength(1);
    expect(conflicts).toHaveLength(199);
    expect(accepted[0]!.headers.get('location')).toBe(`/v1/simulations/${id}`);
    const winner = accepted[0]!.body;
    for (const r of conflicts) {
      expectProblemShape(r, 'simulation-exists', 409);
      expect(r.headers.get('location')).toBe(`/v1/simulations/${id}`);
      expect(r.body.simulation.simulation_id).toBe(id);
      expect(r.body.simulation.scenario).toEqual(winner.scenario);
    }
    expect(await rowsWithId(id)).toHaveLength(1);
    const outbox = await api.db.db
      .selectFrom('outbox')
      .selectAll()
      .where('job_id', '=', `sim-${id}`)
      .execute();
    expect(outbox).toHaveLength(1);
    const jobs = await api.queues.get('simulations').getJobs(['waiting', 'delayed', 'active']);
    expect(jobs.filter((j) => j.data.simulation_id === id)).toHaveLength(1);
    expect(await api.queues.get('simulations').getJob(`sim-${id}`)).toBeDefined();
  });

  it('the accepted run is queued with its resolved seed stored and shown', async () => {
    const r = await post({ simulation_id: 'seeded-1', scenario });
    expect(r.status).toBe(202);
    expect(r.body).toMatchObject({
      simulation_id: 'seeded-1',
      status: 'queued',
      progress: 0,
      result: null,
      error: null,
      attempts: 0,
      started_at: null,
      finished_at: null,
    });
    expect(Number.isInteger(r.body.scenario.seed)).toBe(true);
    expect(r.body.created_at).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
    const got = await call(api, '/v1/simulations/seeded-1', { key: api.keys.read });
    expect(got.status).toBe(200);
    expect(got.body.scenario).toEqual(r.body.scenario);

    const fixed = await post({ simulation_id: 'seeded-2', scenario: { ...scenario, seed: 7 } });
    expect(fixed.body.scenario.seed).toBe(7);
  });

  it('a retry with the same Idempotency-Key replays the 202, not a 409', async () => {
    const body = { simulation_id: 'idem-1', scenario };
    const first = await post(body, 'sim-idem-1');
    expect(first.status).toBe(202);
    const again = await post(body, 'sim-idem-1');
    expect(again.status).toBe(202);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.headers.get('location')).toBe('/v1/simulations/idem-1');
    expect(again.body).toEqual(first.body);
    // Another key (or none) for the same id is a new request: the id is taken.
    const other = await post(body, 'sim-idem-2');
    expectProblemShape(other, 'simulation-exists', 409);
    expect(other.body.simulation.scenario.seed).toBe(first.body.scenario.seed);
    expect(await rowsWithId('idem-1')).toHaveLength(1);
  });

  it('a bad scenario gets 400 with every problem listed and stores nothing', async () => {
    const r = await post({
      simulation_id: 'bad-1',
      scenario: {
        arrival: { process: 'poisson', rate_per_s: -5 },
        service: { distribution: 'exponential', mean_ms: 'ten' },
        servers: 0,
        customers: 50_000_001,
        colour: 'blue',
      },
    });
    expectProblemShape(r, 'validation-failed', 400);
    const paths = (r.body.errors as Array<{ path: string; message: string }>).map((e) => e.path);
    expect(r.body.errors.length).toBeGreaterThanOrEqual(5);
    expect(paths).toEqual(
      expect.arrayContaining([
        'body.scenario.arrival.rate_per_s',
        'body.scenario.service.mean_ms',
        'body.scenario.servers',
        'body.scenario.customers',
        'body.scenario',
      ]),
    );
    expect(JSON.stringify(r.body.errors)).toContain('colour');
    expect(await rowsWithId('bad-1')).toHaveLength(0);
  });

  it.each([
    ['a bad simulation_id', { simulation_id: '-starts-with-dash', scenario }, 'body.simulation_id'],
    ['a too long simulation_id', { simulation_id: 'a'.repeat(129), scenario }, 'body.simulation_id'],
    ['an unknown body field', { simulation_id: 'x1', scenario, extra: 1 }, 'body'],
    ['a missing scenario', { simulation_id: 'x2' }, 'body.scenario'],
    [
      'a string for servers',
      { simulation_id: 'x3', scenario: { ...scenario, servers: '4' } },
      'body.scenario.servers',
    ],
  ])('%s gets 400 naming it', async (_name, body, path) => {
    const r = await post(body);
    expectProblemShape(r, 'validation-failed', 400);
    expect(r.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  });

  it('posting needs the write scope', async () => {
    const r = await call(api, '/v1/simulations', {
      method: 'POST',
      key: api.keys.read,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ simulation_id: 'scope-1', scenario }),
    });
    expectProblemShape(r, 'forbidden', 403);
  });

  it('cancelling a queued run cancels it at once; cancelling it again is 409; an unknown id is 404', async () => {
    expect((await post({ simulation_id: 'cancel-q', scenario })).status).toBe(202);
    const r = await cancel('cancel-q');
    expect(r.status).toBe(202);
    expect(r.headers.get('location')).toBe('/v1/simulations/cancel-q');
    expect(r.body.status).toBe('cancelled');
    expect(r.body.finished_at).not.toBeNull();
    expect(r.body.cancel_requested_at).not.toBeNull();
    const [row] = await rowsWithId('cancel-q');
    expect(row!.status).toBe('cancelled');
    expectProblemShape(await cancel('cancel-q'), 'conflict', 409);
    expectProblemShape(await cancel('no-such-run'), 'not-found', 404);
    expectProblemShape(
      await call(api, '/v1/simulations/no-such-run', { key: api.keys.read }),
      'not-found',
      404,
    );
  });

  it('the list is newest first, filters by status and pages with a cursor', async () => {
    const all = await call(api, '/v1/simulations?limit=100', { key: api.keys.read });
    expect(all.status).toBe(200);
    const ids = all.body.items.map((i: { simulation_id: string }) => i.simulation_id);
    expect(ids).toHaveLength(5);
    const created = all.body.items.map((i: { created_at: string }) => i.created_at);
    expect([...created].sort().reverse()).toEqual(created);

    const cancelled = await call(api, '/v1/simulations?status=cancelled', { key: api.keys.read });
    expect(cancelled.body.items.map((i: { simulation_id: string }) => i.simulation_id)).toEqual(['cancel-q']);

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor === null ? '' : `&cursor=${cursor}`;
      const page = await call(api, `/v1/simulations?limit=2${q}`, { key: api.keys.read });
      seen.push(...page.body.items.map((i: { simulation_id: string }) => i.simulation_id));
      cursor = page.body.next_cursor;
    } while (cursor !== null);
    expect(seen).toEqual(ids);

    expectProblemShape(
      await call(api, '/v1/simulations?status=done', { key: api.keys.read }),
      'validation-failed',
      400,
    );
    expectProblemShape(
      await call(api, '/v1/simulations?cursor=garbage', { key: api.keys.read }),
      'validation-failed',
      400,
    );
  });

  it('a cursor pages only the list that issued it; one from before cursors named their list still pages', async () => {
    const ids = (await call(api, '/v1/simulations?limit=100', { key: api.keys.read })).body.items.map(
      (i: { simulation_id: string }) => i.simulation_id,
    );
    const first = await call(api, '/v1/simulations?limit=2', { key: api.keys.read });
    const cursor: string = first.body.next_cursor;
    expect(cursor).toEqual(expect.any(String));

    const filtered = await call(api, `/v1/simulations?status=cancelled&cursor=${cursor}`, {
      key: api.keys.read,
    });
    expectProblemShape(filtered, 'validation-failed', 400);
    expect(filtered.body.errors).toEqual([
      {
        path: 'query.cursor',
        message: expect.stringContaining(
          'cursor was issued for GET /v1/simulations, not GET /v1/simulations?status=cancelled',
        ),
      },
    ]);
    const elsewhere = await call(api, `/v1/backups?cursor=${cursor}`, { key: api.keys.read });
    expectProblemShape(elsewhere, 'validation-failed', 400);
    expect(elsewhere.body.errors[0].message).toContain('not GET /v1/backups');

    const [createdAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [number, string];
    const legacy = Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
    const second = await call(api, `/v1/simulations?limit=2&cursor=${legacy}`, { key: api.keys.read });
    expect(second.status).toBe(200);
    expect(second.body.items.map((i: { simulation_id: string }) => i.simulation_id)).toEqual(ids.slice(2, 4));
  });
});
