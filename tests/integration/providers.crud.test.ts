import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordProbeOutcomes } from '../../shared/db/providers-store';
import { BACKENDS } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

/** /v1/providers CRUD, validation and the health view, on each database. */
describe.each(BACKENDS)('/v1/providers ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('providers') });
  });
  afterAll(async () => {
    await api?.close();
  });

  const send = (method: string, path: string, body?: unknown, key = api.keys.admin) =>
    call(api, path, {
      method,
      key,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const create = (body: unknown, key?: string) => send('POST', '/v1/providers', body, key);
  const count = async (table: 'providers' | 'probe_samples' | 'provider_transitions') =>
    Number(
      (
        await api.db.db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  it('an admin creates a provider: 201, Location, defaults applied, header values redacted', async () => {
    const r = await create({
      name: 'billing',
      url: 'http://127.0.0.1:9/health',
      headers: { Authorization: 'Bearer secret-token' },
    });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`/v1/providers/${r.body.id}`);
    expect(r.body).toMatchObject({
      name: 'billing',
      url: 'http://127.0.0.1:9/health',
      method: 'GET',
      expected_status: { min: 200, max: 399 },
      timeout_ms: 2000,
      headers: { Authorization: '[redacted]' },
      enabled: true,
      state: 'unknown',
    });
    expect(r.text).not.toContain('secret-token');
    const one = await call(api, `/v1/providers/${r.body.id}`, { key: api.keys.read });
    expect(one.status).toBe(200);
    expect(one.body).toEqual(r.body);
  });

  it('a single expected status code is stored as a one-code range', async () => {
    const r = await create({
      name: 'nocontent',
      url: 'https://127.0.0.1:9/',
      method: 'HEAD',
      expected_status: 204,
    });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ method: 'HEAD', expected_status: { min: 204, max: 204 } });
  });

  it('a duplicate name is 409 conflict and stores nothing', async () => {
    const before = await count('providers');
    const r = await create({ name: 'billing', url: 'http://127.0.0.1:9/other' });
    expectProblemShape(r, 'conflict', 409);
    expect(await count('providers')).toBe(before);
  });

  it('an invalid body gets 400 listing every problem, and stores nothing', async () => {
    const before = await count('providers');
    const r = await create({
      name: '',
      url: 'ftp://127.0.0.1/x',
      method: 'POST',
      expected_status: { min: 500, max: 200 },
      timeout_ms: 30_001,
      headers: { Host: 'evil', 'Content-Length': '5', 'bad name': 'x', 'X-Ok': 'line\r\nbreak' },
      color: 'red',
    });
    expectProblemShape(r, 'validation-failed', 400);
    const paths = (r.body.errors as Array<{ path: string }>).map((e) => e.path).sort();
    expect(paths).toEqual(
      [
        'body',
        'body.expected_status',
        'body.headers.Content-Length',
        'body.headers.Host',
        'body.headers.X-Ok',
        'body.headers.bad name',
        'body.method',
        'body.name',
        'body.timeout_ms',
        'body.url',
      ].sort(),
    );
    expect(await count('providers')).toBe(before);
  });

  it.each([
    ['a URL with credentials', { url: 'http://user:pw@127.0.0.1/' }, 'body.url'],
    ['a URL over 2048 characters', { url: `http://127.0.0.1/${'a'.repeat(2048)}` }, 'body.url'],
    ['a name over 100 characters', { name: 'n'.repeat(101) }, 'body.name'],
    [
      '21 headers',
      { headers: Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`x-h${i}`, 'v'])) },
      'body.headers',
    ],
    ['a header given twice in different case', { headers: { 'X-A': '1', 'x-a': '2' } }, 'body.headers.x-a'],
    ['a status code out of range', { expected_status: 99 }, 'body.expected_status'],
    ['a zero timeout', { timeout_ms: 0 }, 'body.timeout_ms'],
    // JSON.parse makes "__proto__" an own key, as the api's body parser does.
    [
      'a header named __proto__',
      { headers: JSON.parse('{"__proto__":"x","X-A":"1"}') as object },
      'body.headers',
    ],
  ])('%s is refused with 400', async (_n, over, path) => {
    const r = await create({ name: 'valid-name', url: 'http://127.0.0.1:9/', ...over });
    expectProblemShape(r, 'validation-failed', 400);
    expect((r.body.errors as Array<{ path: string }>).map((e) => e.path)).toEqual([path]);
  });

  it('writes need admin: a write key gets 403; reads need only read', async () => {
    expectProblemShape(
      await create({ name: 'x', url: 'http://127.0.0.1:9/' }, api.keys.write),
      'forbidden',
      403,
    );
    expect((await call(api, '/v1/providers', { key: api.keys.read })).status).toBe(200);
  });

  it('lists newest first with a cursor that walks every provider once', async () => {
    for (let i = 0; i < 3; i++)
      expect((await create({ name: `page-${i}`, url: 'http://127.0.0.1:9/' })).status).toBe(201);
    const total = await count('providers');
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `?limit=2&cursor=${cursor}` : '?limit=2';
      const r = await call(api, `/v1/providers${q}`, { key: api.keys.read });
      expect(r.status).toBe(200);
      expect(r.body.items.length).toBeLessThanOrEqual(2);
      seen.push(...(r.body.items as Array<{ name: string }>).map((p) => p.name));
      cursor = r.body.next_cursor as string | null;
    } while (cursor);
    expect(seen).toHaveLength(total);
    expect(new Set(seen).size).toBe(total);
    expect(seen.slice(0, 3)).toEqual(['page-2', 'page-1', 'page-0']);
    expectProblemShape(
      await call(api, '/v1/providers?cursor=nope', { key: api.keys.read }),
      'validation-failed',
      400,
    );
  });

  it('PATCH changes only the given fields; a taken name is 409; bad fields are 400; unknown ids 404', async () => {
    const created = (await create({ name: 'patchme', url: 'http://127.0.0.1:9/a' })).body;
    const r = await send('PATCH', `/v1/providers/${created.id}`, {
      enabled: false,
      timeout_ms: 500,
      expected_status: { min: 200, max: 204 },
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      name: 'patchme',
      url: 'http://127.0.0.1:9/a',
      enabled: false,
      timeout_ms: 500,
      expected_status: { min: 200, max: 204 },
    });
    expectProblemShape(
      await send('PATCH', `/v1/providers/${created.id}`, { name: 'billing' }),
      'conflict',
      409,
    );
    const bad = await send('PATCH', `/v1/providers/${created.id}`, { url: 'gopher://x', method: 'PUT' });
    expectProblemShape(bad, 'validation-failed', 400);
    expect((bad.body.errors as Array<{ path: string }>).map((e) => e.path).sort()).toEqual([
      'body.method',
      'body.url',
    ]);
    expectProblemShape(await send('PATCH', `/v1/providers/${created.id}`, {}), 'validation-failed', 400);
    expectProblemShape(
      await send('PATCH', `/v1/providers/${crypto.randomUUID()}`, { enabled: true }),
      'not-found',
      404,
    );
    const after = await call(api, `/v1/providers/${created.id}`, { key: api.keys.read });
    expect(after.body).toMatchObject({ name: 'patchme', enabled: false });
  });

  it('a GET → PATCH round trip of the redacted headers is 400 and keeps the stored value; POST refuses the placeholder too', async () => {
    const created = await create({
      name: 'roundtrip',
      url: 'http://127.0.0.1:9/',
      headers: { Authorization: 'Bearer keep-me' },
    });
    expect(created.status).toBe(201);
    const shown = (await call(api, `/v1/providers/${created.body.id}`, { key: api.keys.read })).body;
    const back = await send('PATCH', `/v1/providers/${created.body.id}`, {
      headers: shown.headers,
      timeout_ms: 900,
    });
    expectProblemShape(back, 'validation-failed', 400);
    expect(back.body.errors).toEqual([
      { path: 'body.headers.Authorization', message: expect.stringContaining('placeholder GET shows') },
    ]);
    const row = await api.db.db
      .selectFrom('providers')
      .select(['headers', 'timeout_ms'])
      .where('id', '=', created.body.id)
      .executeTakeFirstOrThrow();
    expect(JSON.parse(row.headers!)).toEqual({ Authorization: 'Bearer keep-me' });
    expect(row.timeout_ms).toBe(2000);

    const before = await count('providers');
    const posted = await create({
      name: 'placeholder',
      url: 'http://127.0.0.1:9/',
      headers: { 'X-Token': '[redacted]' },
    });
    expectProblemShape(posted, 'validation-failed', 400);
    expect(await count('providers')).toBe(before);
  });

  it('health shows state, counters and recent samples newest first; DELETE removes the provider with its history', async () => {
    const created = (await create({ name: 'history', url: 'http://127.0.0.1:9/' })).body;
    const t0 = Date.parse('2026-01-01T00:00:00Z');
    const outcome = (i: number, ok: boolean, state: 'healthy' | 'degraded', transition: boolean) => ({
      providerId: created.id as string,
      runId: null,
      checkedAt: t0 + i * 1000,
      ok,
      statusCode: ok ? 200 : 503,
      latencyMs: 10 + i,
      errorClass: ok ? null : ('bad_status' as const),
      next: {
        state,
        consecutiveFailures: ok ? 0 : 1,
        consecutiveSuccesses: ok ? 1 : 0,
        transition: transition ? { from: ok ? ('unknown' as const) : ('healthy' as const), to: state } : null,
      },
    });
    await recordProbeOutcomes(api.db.db, 1, [outcome(0, true, 'healthy', true)]);
    await recordProbeOutcomes(api.db.db, 1, [outcome(1, false, 'degraded', true)]);
    const h = await call(api, `/v1/providers/${created.id}/health`, { key: api.keys.read });
    expect(h.status).toBe(200);
    expect(h.body).toEqual({
      provider_id: created.id,
      state: 'degraded',
      since: '2026-01-01T00:00:01.000Z',
      last_checked_at: '2026-01-01T00:00:01.000Z',
      latency_ms: 11,
      consecutive_failures: 1,
      consecutive_successes: 0,
      recent: [
        {
          ok: false,
          status_code: 503,
          latency_ms: 11,
          error_class: 'bad_status',
          checked_at: '2026-01-01T00:00:01.000Z',
          run_id: null,
        },
        {
          ok: true,
          status_code: 200,
          latency_ms: 10,
          error_class: null,
          checked_at: '2026-01-01T00:00:00.000Z',
          run_id: null,
        },
      ],
    });

    const providers = await count('providers');
    expect(await count('probe_samples')).toBe(2);
    expect(await count('provider_transitions')).toBe(2);
    expectProblemShape(
      await send('DELETE', `/v1/providers/${created.id}`, undefined, api.keys.write),
      'forbidden',
      403,
    );
    const del = await send('DELETE', `/v1/providers/${created.id}`);
    expect(del.status).toBe(204);
    expect(await count('providers')).toBe(providers - 1);
    expect(await count('probe_samples')).toBe(0);
    expect(await count('provider_transitions')).toBe(0);
    expectProblemShape(await send('DELETE', `/v1/providers/${created.id}`), 'not-found', 404);
    expectProblemShape(
      await call(api, `/v1/providers/${created.id}/health`, { key: api.keys.read }),
      'not-found',
      404,
    );
  });
});
