import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

/** DESIGN.md §4.7 `rate-limited` 429: a per-key limit per api process (RATE_LIMIT_PER_MINUTE). */
describe.each(BACKENDS)('api rate limit ($backend)', ({ makeUrl }) => {
  const LIMIT = 5;
  let api: ApiUnderTest;
  let unlimited: ApiUnderTest;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('api_rate'), env: { RATE_LIMIT_PER_MINUTE: String(LIMIT) } });
    unlimited = await startApi({ databaseUrl: makeUrl('api_rate_off'), env: { RATE_LIMIT_PER_MINUTE: '0' } });
  });
  afterAll(async () => {
    await api?.close();
    await unlimited?.close();
  });

  it('a key gets exactly its limit in a minute, then 429 with Retry-After; other keys and /healthz are not held back', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT; i++) {
      const r = await call(api, '/v1/backups', { key: api.keys.read });
      statuses.push(r.status);
      expect(r.headers.get('ratelimit-policy')).toBe(`${LIMIT};w=60`);
      expect(r.headers.get('ratelimit')).toMatch(
        new RegExp(`^limit=${LIMIT}, remaining=${LIMIT - 1 - i}, reset=\\d+$`),
      );
    }
    expect(statuses).toEqual(Array<number>(LIMIT).fill(200));

    const refused = await call(api, '/v1/backups', { key: api.keys.read });
    expectProblemShape(refused, 'rate-limited', 429);
    expect(refused.body.limit_per_minute).toBe(LIMIT);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.body.detail).toBe(
      `This API key made more than ${LIMIT} requests in a minute to this api process; retry after ${retryAfter} s.`,
    );

    // Another key has its own count; health checks need no key and are never limited.
    expect((await call(api, '/v1/backups', { key: api.keys.write })).status).toBe(200);
    for (let i = 0; i < LIMIT + 2; i++) expect((await call(api, '/healthz')).status).toBe(200);
  });

  it('a refused POST claims nothing: no idempotency record and no backup', async () => {
    const key = api.keys.admin;
    for (let i = 0; i < LIMIT; i++) expect((await call(api, '/v1/backups', { key })).status).toBe(200);
    const r = await call(api, '/v1/backups', {
      key,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'rate-limited-post' },
      body: '{}',
    });
    expectProblemShape(r, 'rate-limited', 429);
    const claims = await api.db.db
      .selectFrom('idempotency_keys')
      .select('key')
      .where('key', '=', 'rate-limited-post')
      .execute();
    expect(claims).toEqual([]);
    expect(await api.db.db.selectFrom('backups').select('id').execute()).toEqual([]);
    // The board counts against the same key.
    expectProblemShape(await call(api, '/admin/queues', { key }), 'rate-limited', 429);
  });

  it('RATE_LIMIT_PER_MINUTE=0 turns the limit off', async () => {
    for (let i = 0; i < LIMIT * 3; i++) {
      const r = await call(unlimited, '/v1/backups', { key: unlimited.keys.read });
      expect(r.status).toBe(200);
      expect(r.headers.get('ratelimit')).toBeNull();
    }
  });
});
