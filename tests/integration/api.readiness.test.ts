import { afterEach, describe, expect, it } from 'vitest';
import { REDIS_DEADLINE_MS } from '../../shared/deadline';
import { BACKENDS, closedPort } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

describe.each(BACKENDS)('api health and readiness ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest | undefined;
  afterEach(async () => {
    await api?.close();
    api = undefined;
  });

  it('/healthz and /readyz answer 200 without a key when everything is up', async () => {
    api = await startApi({ databaseUrl: makeUrl('api_ready') });
    const health = await call(api, '/healthz');
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ status: 'ok' });
    const ready = await call(api, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({
      status: 'ready',
      checks: { database: 'ok', migrations: 'ok', redis: 'ok' },
    });
  });

  it('/readyz answers 503 naming redis when Redis is unreachable, and /healthz stays 200', async () => {
    const port = await closedPort();
    api = await startApi({
      databaseUrl: makeUrl('api_ready'),
      redisUrl: `redis://:hunter2secret@127.0.0.1:${port}`,
    });
    const r = await call(api, '/readyz');
    expectProblemShape(r, 'dependency-unavailable', 503);
    expect(r.headers.get('retry-after')).toBe('5');
    expect(r.body.checks.database).toBe('ok');
    expect(r.body.checks.migrations).toBe('ok');
    // A driver's message can name hosts and users: the page shows our wording or a code only.
    expect(r.body.checks.redis).toMatch(/^unavailable(: redis did not answer PING| \([A-Za-z ]+\))/);
    expect(r.body.detail).toContain('redis');
    expect(r.text).not.toContain('hunter2secret');
    expect(r.text).not.toContain(String(port));
    expect((await call(api, '/healthz')).status).toBe(200);
  });

  it('with Redis down since start, a POST is accepted (202, row and outbox row kept) and job and board reads are 503, none hangs', async () => {
    api = await startApi({
      databaseUrl: makeUrl('api_no_redis'),
      redisUrl: `redis://127.0.0.1:${await closedPort()}`,
    });
    const started = performance.now();
    const r = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'no-redis-1' },
      body: '{}',
    });
    expect(r.status).toBe(202);
    // BullMQ waits for a connection that was never ready without limit; the api gives up on the
    // enqueue after REDIS_DEADLINE_MS and leaves the job to the outbox relay.
    expect(performance.now() - started).toBeLessThan(REDIS_DEADLINE_MS + 2_000);
    const outbox = await api.db.db.selectFrom('outbox').selectAll().execute();
    expect(outbox).toHaveLength(1);
    expect(outbox[0]!.dispatched_at).toBeNull();
    expect(outbox[0]!.attempts).toBe(1);
    const job = await call(api, `/v1/jobs/backups/backup-${r.body.id as string}`, { key: api.keys.read });
    expectProblemShape(job, 'dependency-unavailable', 503);
    // Bull Board's API reads the queues: a 503 at once, not a request that never ends.
    const board = await call(api, '/admin/queues/api/queues', { key: api.keys.admin });
    expectProblemShape(board, 'dependency-unavailable', 503);
  });

  it('/readyz answers 503 naming migrations when the database is not migrated', async () => {
    api = await startApi({ databaseUrl: makeUrl('api_ready'), migrate: false });
    const r = await call(api, '/readyz');
    expectProblemShape(r, 'dependency-unavailable', 503);
    expect(r.body.checks).toMatchObject({ database: 'ok', redis: 'ok' });
    expect(r.body.checks.migrations).toMatch(/^pending: 0001_initial/);
  });
});
