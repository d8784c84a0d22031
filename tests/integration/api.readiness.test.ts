import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

/** A TCP port on which nothing listens: bind, read the port, close. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

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
    expect(r.body.checks.redis).toMatch(/^unavailable: /);
    expect(r.body.detail).toContain('redis');
    expect(r.text).not.toContain('hunter2secret');
    expect((await call(api, '/healthz')).status).toBe(200);
  });

  it('/readyz answers 503 naming migrations when the database is not migrated', async () => {
    api = await startApi({ databaseUrl: makeUrl('api_ready'), migrate: false });
    const r = await call(api, '/readyz');
    expectProblemShape(r, 'dependency-unavailable', 503);
    expect(r.body.checks).toMatchObject({ database: 'ok', redis: 'ok' });
    expect(r.body.checks.migrations).toMatch(/^pending: 0001_initial/);
  });
});
