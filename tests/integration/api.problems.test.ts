import net from 'node:net';
import type { AddressInfo } from 'node:net';
import SQLite from 'better-sqlite3';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../api/app';
import { problemHandler } from '../../api/middleware/problem';
import { requestContext } from '../../api/middleware/request-id';
import { systemClock } from '../../shared/clock';
import { createLogger } from '../../shared/logger';
import { BACKENDS, testSqliteUrl, waitFor } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

// Request parsing and error shapes do not depend on the database backend: SQLite only.
describe('api problem responses', () => {
  let api: ApiUnderTest;
  beforeAll(async () => {
    api = await startApi({ databaseUrl: testSqliteUrl('api_problems') });
  });
  afterAll(async () => {
    await api?.close();
  });
  const json = { 'content-type': 'application/json' };

  it('malformed JSON gets 400 validation-failed saying where it failed', async () => {
    const r = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { ...json, 'idempotency-key': 'body-problem' },
      body: '{"label":\n  oops}',
    });
    expectProblemShape(r, 'validation-failed', 400);
    expect(r.body.title).toBe('Malformed JSON body');
    expect(r.body.detail).toContain('line 2, column 3');
  });

  it('a JSON scalar body is refused: the top level must be an object', async () => {
    const r = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { ...json, 'idempotency-key': 'body-problem' },
      body: '"x"',
    });
    expectProblemShape(r, 'validation-failed', 400);
  });

  it('a 1 MiB body gets 413 payload-too-large', async () => {
    const body = JSON.stringify({ blob: 'x'.repeat(1024 * 1024) });
    const r = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { ...json, 'idempotency-key': 'body-problem' },
      body,
    });
    expectProblemShape(r, 'payload-too-large', 413);
    expect(r.body.detail).toContain('65536');
  });

  it('a text/plain body, and a body without a Content-Type, get 415 unsupported-media-type', async () => {
    for (const headers of [{ 'content-type': 'text/plain' }, {}] as Record<string, string>[]) {
      const r = await call(api, '/v1/backups', {
        method: 'POST',
        key: api.keys.write,
        headers: { ...headers, 'idempotency-key': 'media-type' },
        body: new TextEncoder().encode('{"a":1}'),
      });
      expectProblemShape(r, 'unsupported-media-type', 415);
      expect(r.body.detail).toContain(headers['content-type'] ? '(got text/plain)' : '(got no Content-Type)');
    }
  });

  it('a body that is not the gzip or brotli its Content-Encoding says gets 400 saying so', async () => {
    for (const encoding of ['gzip', 'br']) {
      const r = await call(api, '/v1/backups', {
        method: 'POST',
        key: api.keys.write,
        headers: {
          'content-type': 'application/json',
          'content-encoding': encoding,
          'idempotency-key': `not-${encoding}`,
        },
        body: '{"label":"x"}',
      });
      expectProblemShape(r, 'validation-failed', 400);
      expect(r.body.detail).toContain('does not decode as its Content-Encoding says');
    }
  });

  it('the scope is checked before the body: a key without it gets 403 whatever it sends, a key with it the body problem', async () => {
    const big = JSON.stringify({ label: 'x'.repeat(70 * 1024) });
    const cases = [
      { path: '/v1/schedules/backup', method: 'PUT', body: '{', type: 'application/json', problem: 400 },
      { path: '/v1/backups', method: 'POST', body: big, type: 'application/json', problem: 413 },
      { path: '/v1/providers', method: 'POST', body: 'x', type: 'text/plain', problem: 415 },
    ];
    for (const c of cases) {
      const send = (key: string) =>
        call(api, c.path, {
          method: c.method,
          key,
          headers: { 'content-type': c.type, 'idempotency-key': `scope-first-${c.method}` },
          body: c.body,
        });
      const refused = await send(api.keys.read);
      expectProblemShape(refused, 'forbidden', 403);
      const admitted = await send(api.keys.admin);
      expect(admitted.status).toBe(c.problem);
    }
  });

  it('a charset other than UTF-8 gets 415 saying so, not a misleading JSON syntax error', async () => {
    for (const charset of ['utf-16', 'latin1']) {
      const r = await call(api, '/v1/backups', {
        method: 'POST',
        key: api.keys.write,
        headers: {
          'content-type': `application/json; charset=${charset}`,
          'idempotency-key': `cs-${charset}`,
        },
        body: '{}',
      });
      expectProblemShape(r, 'unsupported-media-type', 415);
      expect(r.body.detail).toContain(`got charset=${charset}`);
    }
  });

  it('a missing field says it is required; label may be null, as backups show it', async () => {
    const missing = await call(api, '/v1/simulations', {
      method: 'POST',
      key: api.keys.write,
      headers: { ...json, 'idempotency-key': 'missing-scenario' },
      body: '{"simulation_id":"missing-scenario"}',
    });
    expectProblemShape(missing, 'validation-failed', 400);
    expect(missing.body.errors).toContainEqual({ path: 'body.scenario', message: 'is required (object)' });

    const nullLabel = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { ...json, 'idempotency-key': 'null-label' },
      body: '{"label":null}',
    });
    expect(nullLabel.status).toBe(202);
    expect(nullLabel.body.label).toBeNull();
  });

  it('a +json media type and a charset parameter are accepted as JSON', async () => {
    const r = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: {
        'content-type': 'application/merge-patch+json; charset=utf-8',
        'idempotency-key': 'plus-json',
      },
      body: '{"label":"plus-json"}',
    });
    expect(r.status).toBe(202);
    expect(r.body.label).toBe('plus-json');
  });

  it('an unknown route gets 404 not-found', async () => {
    const r = await call(api, '/v1/nothing/here', { key: api.keys.read });
    expectProblemShape(r, 'not-found', 404);
  });

  it('a known path with the wrong method gets 405 with Allow', async () => {
    const r = await call(api, '/v1/jobs/noop/1', { method: 'DELETE', key: api.keys.admin });
    expectProblemShape(r, 'method-not-allowed', 405);
    expect(r.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
    const h = await call(api, '/healthz', { method: 'POST' });
    expectProblemShape(h, 'method-not-allowed', 405);
    expect(h.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
  });

  it('params over 255 characters get 400 listing every invalid field', async () => {
    const long = 'q'.repeat(256);
    const r = await call(api, `/v1/jobs/${long}/${long}`, { key: api.keys.read });
    expectProblemShape(r, 'validation-failed', 400);
    expect(r.body.errors.map((e: { path: string }) => e.path).sort()).toEqual([
      'params.jobId',
      'params.queue',
    ]);
  });

  it('a well-formed X-Request-Id is echoed and is the problem instance; a malformed one is replaced', async () => {
    const mine = 'client-req_42.abc';
    const r = await call(api, '/v1/nothing', { key: api.keys.read, headers: { 'x-request-id': mine } });
    expect(r.headers.get('x-request-id')).toBe(mine);
    expect(r.body.instance).toBe(mine);
    const bad = await call(api, '/v1/nothing', {
      key: api.keys.read,
      headers: { 'x-request-id': 'has space/slash' },
    });
    expect(bad.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(bad.body.instance).toBe(bad.headers.get('x-request-id'));
    expect(api.logs.some((l) => l.includes(`"request_id":"${mine}"`) && l.includes('"msg":"request"'))).toBe(
      true,
    );
  });

  it('each request writes one access log line with method, path without query, status and duration', async () => {
    const id = 'access-log-check';
    await call(api, '/v1/nothing?token=s3cr3t-in-query', {
      key: api.keys.read,
      headers: { 'x-request-id': id },
    });
    const lines = api.logs
      .map((l) => JSON.parse(l))
      .filter((l) => l.request_id === id && l.msg === 'request');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 30, method: 'GET', path: '/v1/nothing', status: 404 });
    expect(typeof lines[0].duration_ms).toBe('number');
    expect(api.logs.join('\n')).not.toContain('s3cr3t-in-query');
  });

  it('an invalid percent-encoding in a path parameter gets 400, not 500', async () => {
    const r = await call(api, '/v1/jobs/noop/%E0%A4%A', { key: api.keys.read });
    expectProblemShape(r, 'validation-failed', 400);
  });

  it.each(['', '0', '101', '0x10', '1e2', '%205', '5.0', '-1', 'abc', '5&limit=6'])(
    'list limit=%s gets 400: only 1-100 in digits',
    async (limit) => {
      const r = await call(api, `/v1/backups?limit=${limit}`, { key: api.keys.read });
      expectProblemShape(r, 'validation-failed', 400);
      expect(r.body.errors[0].path).toBe('query.limit');
    },
  );

  it('list limit=007 is 7, and an upper-case UUID names the same resource as its lower-case form', async () => {
    expect((await call(api, '/v1/backups?limit=007', { key: api.keys.read })).status).toBe(200);
    const created = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { ...json, 'idempotency-key': 'upper-case-id' },
      body: '{}',
    });
    expect(created.status).toBe(202);
    const id = created.body.id as string;
    const upper = await call(api, `/v1/backups/${id.toUpperCase()}`, { key: api.keys.read });
    expect(upper.status).toBe(200);
    expect(upper.body.id).toBe(id);
  });

  it('headers over 16 KiB get 431 as problem+json', async () => {
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(api.url).port), '127.0.0.1');
      let data = '';
      socket.on('data', (d) => (data += d.toString()));
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
      socket.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`);
    });
    const [head, body] = raw.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 431 /);
    expect(head).toMatch(/content-type: application\/problem\+json/i);
    const problem = JSON.parse(body!);
    expect(problem).toMatchObject({ status: 431, type: 'urn:taskyard:problem:validation-failed' });
    expect(head).toContain(`X-Request-Id: ${problem.instance}`);
  });

  it('fuzz: 200 random requests never get a 5xx and every error is problem+json', async () => {
    // mulberry32: a fixed seed makes a failure reproducible.
    let seed = 0x7a5c_1e1d;
    const rand = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const methods = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
    const segments = [
      'v1',
      'jobs',
      'noop',
      'backups',
      'admin',
      'queues',
      'healthz',
      'readyz',
      '..',
      '.',
      '%2F',
      '%00',
      '%ZZ',
      '%E0%A4%A',
      'ü',
      '日本',
      '💥',
      ':id',
      '*',
      '?x=1',
      '#frag',
      ';p',
      '%25',
      'a'.repeat(300),
      'b'.repeat(5000),
      '',
      ' ',
      '%20',
      'api',
      'static',
      'index.html',
      'c'.repeat(17_000),
    ];
    // Mostly valid keys, so most requests get past auth into parsing and routing.
    const keys = [
      undefined,
      api.keys.read,
      api.keys.write,
      api.keys.admin,
      api.keys.admin,
      api.keys.write,
      api.keys.revoked,
      'junk',
    ];
    const contentTypes = [
      undefined,
      'application/json',
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/json; charset=latin1',
      'application/vnd.x+json',
      'multipart/form-data; boundary=x',
    ];
    const bodies = [
      '{}',
      '{"a":1}',
      '{bad',
      '[',
      'null',
      '"s"',
      '{"a":"\u0000"}',
      'x'.repeat(70_000),
      '{"deep":' + '['.repeat(5000) + ']'.repeat(5000) + '}',
      '💥',
    ];
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    for (let i = 0; i < 200; i++) {
      const method = pick(methods);
      const depth = 1 + Math.floor(rand() * 5);
      const path =
        pick(['/', '/v1/', '/v1/jobs/', '/admin/queues/']) +
        Array.from({ length: depth }, () => pick(segments)).join('/');
      const headers: Record<string, string> = {};
      const key = pick(keys);
      if (key)
        headers.authorization =
          rand() < 0.85 ? `Bearer ${key}` : `Basic ${Buffer.from(`u:${key}`).toString('base64')}`;
      if (rand() < 0.3) headers['x-request-id'] = pick(['ok-id', 'ü', 'x'.repeat(200), '../../etc']);
      let body: string | undefined;
      if (method !== 'GET' && method !== 'HEAD' && rand() < 0.7) {
        body = pick(bodies);
        const ct = pick(contentTypes);
        if (ct) headers['content-type'] = ct;
      }
      let r: Awaited<ReturnType<typeof call>>;
      try {
        r = await call(api, path, { method, headers, body });
      } catch (err) {
        failures.push(`${method} ${path.slice(0, 80)}: fetch failed ${(err as Error).message}`);
        continue;
      }
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      const label = `${method} ${path.slice(0, 80)} → ${r.status}`;
      if (r.status >= 500) failures.push(`${label}: ${r.text.slice(0, 200)}`);
      if (r.status >= 400 && method !== 'HEAD') {
        const ct = r.headers.get('content-type') ?? '';
        if (!ct.startsWith('application/problem+json')) failures.push(`${label}: content-type ${ct}`);
        else if (r.body?.instance !== r.headers.get('x-request-id') && r.status !== 431)
          failures.push(`${label}: instance`);
      }
    }
    expect(failures).toEqual([]);
    // The requests reached past auth into parsing and routing, not just the 401 wall.
    expect([...statuses.keys()].filter((s) => s !== 401).length).toBeGreaterThanOrEqual(5);
    expect(api.logs.filter((l) => l.includes('"level":50'))).toEqual([]);
  });
});

// Postgres refuses U+0000 in text; SQLite would store it: both backends must answer the same 400.
describe.each(BACKENDS)('text no database can store ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('api_text') });
  });
  afterAll(async () => {
    await api?.close();
  });
  const post = (path: string, key: string, body: string | Uint8Array, idempotencyKey?: string) =>
    call(api, path, {
      method: 'POST',
      key,
      headers: {
        'content-type': 'application/json',
        ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      },
      body,
    });
  const backups = async () =>
    (await api.db.db.selectFrom('backups').select('label').execute()).map((r) => r.label);

  it.each([
    ['a NUL character', String.raw`{"label":"a\u0000b"}`, 'NUL character'],
    ['an unpaired high surrogate', String.raw`{"label":"a\ud800"}`, 'unpaired UTF-16 surrogate'],
    ['an unpaired low surrogate', String.raw`{"label":"\udc00a"}`, 'unpaired UTF-16 surrogate'],
  ])(
    'a label with %s gets 400 naming the field, and nothing is stored or claimed',
    async (_what, body, says) => {
      const key = `text-${_what.replace(/\W+/g, '-')}`;
      const r = await post('/v1/backups', api.keys.write, body, key);
      expectProblemShape(r, 'validation-failed', 400);
      expect(r.body.errors).toEqual([{ path: 'body.label', message: expect.stringContaining(says) }]);
      expect(await backups()).toEqual([]);
      // The key was not used up: the corrected request goes through with it.
      const ok = await post('/v1/backups', api.keys.write, '{"label":"fixed"}', key);
      expect(ok.status).toBe(202);
      await api.db.db.deleteFrom('outbox').execute();
      await api.db.db.deleteFrom('backups').execute();
    },
  );

  it('a body that is not valid UTF-8 gets 400, and nothing is stored or claimed', async () => {
    const body = Buffer.concat([Buffer.from('{"label":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
    const r = await post('/v1/backups', api.keys.write, body, 'text-not-utf8');
    expectProblemShape(r, 'validation-failed', 400);
    expect(r.body.errors).toEqual([{ path: 'body', message: expect.stringContaining('not valid UTF-8') }]);
    expect(await backups()).toEqual([]);
    const ok = await post('/v1/backups', api.keys.write, '{"label":"fixed"}', 'text-not-utf8');
    expect(ok.status).toBe(202);
    await api.db.db.deleteFrom('outbox').execute();
    await api.db.db.deleteFrom('backups').execute();
  });

  it('a NUL in a nested value or in a key is refused too (provider url, header name)', async () => {
    const url = await post(
      '/v1/providers',
      api.keys.admin,
      String.raw`{"name":"p1","url":"http://127.0.0.1:9/a\u0000b"}`,
    );
    expectProblemShape(url, 'validation-failed', 400);
    expect(url.body.errors[0].path).toBe('body.url');
    const header = await post(
      '/v1/providers',
      api.keys.admin,
      String.raw`{"name":"p2","url":"http://127.0.0.1:9/","headers":{"X-\u0000":"1"}}`,
    );
    expectProblemShape(header, 'validation-failed', 400);
    expect(header.body.errors[0].path).toBe('body.headers (a key)');
    expect(await api.db.db.selectFrom('providers').select('id').execute()).toEqual([]);
    // Thousands deep: found without recursion (a recursive walk overflowed the stack: 500).
    const deep = await post(
      '/v1/backups',
      api.keys.write,
      `{"label":"x","deep":${'['.repeat(5000)}"\\u0000"${']'.repeat(5000)}}`,
      'text-deep',
    );
    expectProblemShape(deep, 'validation-failed', 400);
    expect(deep.body.errors[0].path).toBe(`body.deep${'[0]'.repeat(5000)}`);
  });

  it('well-formed text outside the BMP (a surrogate pair) is stored exactly', async () => {
    const r = await post('/v1/backups', api.keys.write, '{"label":"nightly \ud83d\ude80"}', 'text-emoji');
    expect(r.status).toBe(202);
    expect(await backups()).toEqual(['nightly \u{1F680}']);
  });
});

function countConnections(server: import('node:http').Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );
}

describe('api problem middleware', () => {
  it('an unexpected error becomes a generic 500 internal problem and is logged with its cause', async () => {
    const logs: string[] = [];
    const logger = createLogger({ level: 'debug' }, { write: (l: string) => void logs.push(l) });
    const app = express();
    app.use(requestContext({ logger, clock: systemClock }));
    app.get('/boom', async () => {
      throw new Error('select password from users where id = 1');
    });
    app.use(problemHandler(logger));
    const server = createHttpServer(app, logger);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const r = await call({ url }, '/boom');
      expectProblemShape(r, 'internal', 500);
      expect(r.text).not.toContain('select');
      expect(r.text).not.toContain('at ');
      const logged = logs.map((l) => JSON.parse(l)).find((l) => l.level === 50);
      expect(logged?.err?.message).toBe('select password from users where id = 1');
      expect(logged?.request_id).toBe(r.body.instance);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('a request whose body stops short of its Content-Length gets 408 as problem+json once the request timeout passes', async () => {
    const logger = createLogger({ level: 'silent' });
    const app = express();
    app.use(express.json());
    app.post('/slow', (_req, res) => {
      res.json({ ok: true });
    });
    const server = createHttpServer(app, logger, { requestTimeoutMs: 1_000 });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const started = Date.now();
      const raw = await new Promise<string>((resolve, reject) => {
        // A client that never closes its side: the server must close the connection itself.
        const socket = net.connect({
          port: (server.address() as AddressInfo).port,
          host: '127.0.0.1',
          allowHalfOpen: true,
        });
        let data = '';
        socket.on('data', (d) => (data += d.toString()));
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
        socket.write(
          'POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"label":"a"}',
        );
      });
      const [head, body] = raw.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 408 /);
      expect(head).toMatch(/content-type: application\/problem\+json/i);
      expect(JSON.parse(body!)).toMatchObject({
        status: 408,
        detail: expect.stringContaining('within 1000 ms'),
      });
      // Node's default would have held the connection for 5 minutes.
      expect(Date.now() - started).toBeLessThan(10_000);
      await waitFor(async () => (await countConnections(server)) === 0, {
        what: 'the timed-out connection closed by the server',
        timeoutMs: 5_000,
      });
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('a database that cannot serve (SQLite locked past busy_timeout) gets 503 with Retry-After, and the retry with the same key succeeds', async () => {
    const databaseUrl = testSqliteUrl('api_busy');
    const api = await startApi({ databaseUrl });
    // Another process's long write transaction, as a stuck `sqlite3` shell would hold it.
    const other = new SQLite(databaseUrl.slice('sqlite:'.length));
    try {
      other.prepare('begin immediate').run();
      const post = () =>
        call(api, '/v1/backups', {
          method: 'POST',
          headers: {
            authorization: `Bearer ${api.keys.write}`,
            'content-type': 'application/json',
            'idempotency-key': 'busy-1',
          },
          body: '{}',
        });
      const busy = await post();
      expectProblemShape(busy, 'dependency-unavailable', 503);
      expect(busy.headers.get('retry-after')).toBe('5');
      expect(busy.body.detail).toMatch(/database is unavailable/);
      expect(busy.text).not.toContain('SQLITE');
      other.prepare('rollback').run();

      const retried = await post();
      expect(retried.status).toBe(202);
      expect(await api.db.db.selectFrom('backups').select('id').execute()).toHaveLength(1);
    } finally {
      other.close();
      await api.close();
    }
  });
});
