import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, waitFor } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

const PROTECTED = ['/v1/jobs/noop/1', '/admin/queues', '/v1/no-such-thing', '/'];

describe.each(BACKENDS)('api authentication ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('api_auth') });
  });
  afterAll(async () => {
    await api?.close();
  });

  it.each(PROTECTED)('a request to %s without a key gets 401 problem+json with a challenge', async (path) => {
    const r = await call(api, path);
    expectProblemShape(r, 'unauthorized', 401);
    expect(r.headers.get('www-authenticate')).toMatch(/^(Bearer|Basic) /);
  });

  it('a v1 route challenges with Bearer and the Bull Board with Basic first, then Bearer (it takes both)', async () => {
    expect((await call(api, '/v1/jobs/noop/1')).headers.get('www-authenticate')).toMatch(/^Bearer /);
    expect((await call(api, '/admin/queues')).headers.get('www-authenticate')).toBe(
      'Basic realm="taskyard", charset="UTF-8", Bearer realm="taskyard"',
    );
  });

  it('two Authorization headers get 401 even when the first is a good key (Node would drop the second)', async () => {
    // fetch would join them into one line; node:http sends an array as separate lines.
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.get(
        `${api.url}/v1/backups`,
        {
          headers: [
            'host',
            new URL(api.url).host,
            'authorization',
            `Bearer ${api.keys.admin}`,
            'authorization',
            'Bearer not-a-key',
          ],
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode!, body: text }));
        },
      );
      req.on('error', reject);
    });
    expect(status).toBe(401);
    expect((JSON.parse(body) as { detail: string }).detail).toBe(
      'Send one Authorization header, not several.',
    );
  });

  it('a path under the Bull Board that it does not serve gets a 404 naming the whole path', async () => {
    const r = await call(api, '/admin/queues/api/nope', { key: api.keys.admin });
    expectProblemShape(r, 'not-found', 404);
    expect(r.body.detail).toBe('There is no resource at GET /admin/queues/api/nope.');
  });

  it("the board's own refusals and throws are problem+json, 4xx for what the request asked, never its plain JSON", async () => {
    const admin = { key: api.keys.admin };
    // The harness does not wait for Redis, and the board answers 503 until it is connected.
    await waitFor(() => api.redis.status === 'ready', { what: "the api's Redis connection" });
    // A queue the board does not know: its 404, with its key kept for its page.
    const queue = await call(api, '/admin/queues/api/queues/nope/1', admin);
    expectProblemShape(queue, 'not-found', 404);
    expect(queue.body.detail).toBe(
      'Bull Board refused GET /admin/queues/api/queues/nope/1: queue not found.',
    );
    expect(queue.body.error).toEqual({ key: 'ERRORS.QUEUE_NOT_FOUND' });
    const job = await call(api, '/admin/queues/api/queues/backups/no-such-job', admin);
    expectProblemShape(job, 'not-found', 404);
    // A query value it refuses: 400 naming the field.
    const bad = await call(api, '/admin/queues/api/queues?activeQueue=backups&status=bogus', admin);
    expectProblemShape(bad, 'validation-failed', 400);
    expect(bad.body.detail).toBe(
      'Bull Board refused GET /admin/queues/api/queues: invalid query param {"field":"status"}.',
    );
    // An added job is checked before BullMQ sees it: its name, its data against the job's
    // schema, and options BullMQ would accept and then fail on (attempts "abc" was stored, then
    // failed inside a Lua script on every fetch). Every problem is listed; nothing is added.
    const add = await call(api, '/admin/queues/api/queues/noop/add', {
      ...admin,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'x',
        data: {},
        options: { jobId: 5, attempts: 'abc', delay: -5, repeat: { every: 1000 } },
      }),
    });
    expectProblemShape(add, 'validation-failed', 400);
    expect((add.body.errors as Array<{ path: string }>).map((e) => e.path).sort()).toEqual([
      'body.name',
      'body.options',
      'body.options.attempts',
      'body.options.delay',
      'body.options.jobId',
    ]);
    expect(add.body.errors).toContainEqual({
      path: 'body.name',
      message: 'name must be a job of queue noop: noop',
    });
    // What the board's page shows: without `error`, its dialog closed as if the job was added.
    expect(add.body.error).toEqual({ key: 'ERRORS.INTERNAL_SERVER_ERROR' });
    expect(add.body.message).toBe(add.body.detail);
    expect(add.body.detail).toContain('body.options.attempts');
    // The board's router ignores case and a trailing slash; so does the check. A null payload
    // is refused (BullMQ would store it, and the worker fail it for good).
    for (const path of ['/admin/queues/api/queues/noop/add/', '/admin/queues/API/Queues/noop/ADD']) {
      const loose = await call(api, path, {
        ...admin,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'noop', data: null, options: { attempts: 'abc' } }),
      });
      expectProblemShape(loose, 'validation-failed', 400);
      expect((loose.body.errors as Array<{ path: string }>).map((e) => e.path).sort()).toEqual([
        'body.data',
        'body.options.attempts',
      ]);
    }
    const badData = await call(api, '/admin/queues/api/queues/noop/add', {
      ...admin,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'noop',
        data: { hold_ms: -1 },
        options: { deduplication: { id: 'a', ttl: 'x' } },
      }),
    });
    expectProblemShape(badData, 'validation-failed', 400);
    expect((badData.body.errors as Array<{ path: string }>).map((e) => e.path).sort()).toEqual([
      'body.data.hold_ms',
      'body.options.deduplication.ttl',
    ]);
    expect(await api.queues.get('noop').getJobCountByTypes('waiting', 'delayed')).toBe(0);
    // A job the board's own form would send goes through.
    const good = await call(api, '/admin/queues/api/queues/noop/add', {
      ...admin,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'noop',
        data: {},
        options: { attempts: 2, delay: 60_000, removeOnComplete: true },
      }),
    });
    expect(good.status).toBe(200);
    expect(good.body.status).toBe('delayed');
    await api.queues.get('noop').obliterate({ force: true });
    // A refusal keeps every member of the board's answer: removing the armed run of a job
    // scheduler names the scheduler, which the page offers to remove instead.
    const noop = api.queues.get('noop');
    await noop.upsertJobScheduler('board-test', { every: 3_600_000 }, { name: 'noop', data: {} });
    const [armed] = await noop.getJobs(['delayed', 'waiting']);
    const clean = await call(api, `/admin/queues/api/queues/noop/${encodeURIComponent(armed!.id!)}/clean`, {
      ...admin,
      method: 'PUT',
    });
    expectProblemShape(clean, 'validation-failed', 400);
    expect(clean.body).toMatchObject({ code: 'JOB_BELONGS_TO_JOB_SCHEDULER', jobSchedulerId: 'board-test' });
    expect(clean.body.message).toMatchObject({ key: 'ERRORS.JOB_BELONGS_TO_JOB_SCHEDULER_DETAILS' });
    await noop.removeJobScheduler('board-test');
    // A fault inside Redis is the server's, not the request's: a 500 that shows nothing of it.
    const idKey = `${api.prefix}:noop:id`;
    await api.redis.del(idKey);
    await api.redis.hset(idKey, 'not', 'a counter');
    try {
      const fault = await call(api, '/admin/queues/api/queues/noop/add', {
        ...admin,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'noop', data: {} }),
      });
      expectProblemShape(fault, 'internal', 500);
      expect(fault.body.detail).toBe('An internal error occurred; it has been logged with this request id.');
      expect(fault.text).not.toMatch(/WRONGTYPE|script|user_script/i);
    } finally {
      await api.redis.del(idKey);
    }
    // Answers below 400 are the board's own JSON, as its page expects.
    const list = await call(api, '/admin/queues/api/queues', admin);
    expect(list.status).toBe(200);
    expect(list.headers.get('content-type')).toMatch(/^application\/json/);
    expect(Array.isArray(list.body.queues)).toBe(true);
  });

  it('an unknown key, a revoked key, a malformed header and an over-long header all get 401', async () => {
    const cases: Record<string, string> = {
      unknown: 'Bearer ty_not-a-real-key-at-all-0000000000000',
      revoked: `Bearer ${api.keys.revoked}`,
      malformed: `Token ${api.keys.read}`,
      emptyBearer: 'Bearer ',
      overLong: `Bearer ${'a'.repeat(600)}`,
    };
    for (const [what, authorization] of Object.entries(cases)) {
      const r = await call(api, '/v1/jobs/noop/1', { headers: { authorization } });
      expect(r.status, what).toBe(401);
      expectProblemShape(r, 'unauthorized', 401);
      expect(r.headers.get('www-authenticate'), what).toMatch(/^Bearer /);
    }
  });

  it('a read key passes auth on a read route', async () => {
    const r = await call(api, '/v1/jobs/noop/does-not-exist', { key: api.keys.read });
    expectProblemShape(r, 'not-found', 404);
  });

  it('a read key or a write key on the admin board gets 403 naming the admin scope', async () => {
    for (const key of [api.keys.read, api.keys.write]) {
      const r = await call(api, '/admin/queues', { key });
      expectProblemShape(r, 'forbidden', 403);
      expect(r.body.detail).toContain('"admin"');
      expect(r.body.required_scope).toBe('admin');
    }
  });

  it('the Bull Board answers HTML to Basic admin credentials and its assets load under the same credentials', async () => {
    const basic = `Basic ${Buffer.from(`anyone:${api.keys.admin}`).toString('base64')}`;
    const page = await call(api, '/admin/queues', { headers: { authorization: basic } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('x-powered-by')).toBeNull();
    const asset = /(?:src|href)="([^"]*static\/[^"]+\.js)"/.exec(page.text)?.[1];
    expect(asset).toBeDefined();
    const assetPath = asset!.startsWith('/') ? asset! : `/admin/queues/${asset!}`;
    expect((await call(api, assetPath)).status).toBe(401);
    const loaded = await call(api, assetPath, { headers: { authorization: basic } });
    expect(loaded.status).toBe(200);
    expect(loaded.headers.get('content-type')).toMatch(/javascript/);
    const missing = await call(api, '/admin/queues/static/no-such-asset.js', {
      headers: { authorization: basic },
    });
    expectProblemShape(missing, 'not-found', 404);
    const queues = await call(api, '/admin/queues/api/queues', { key: api.keys.admin });
    expect(queues.status).toBe(200);
    expect((queues.body.queues as Array<{ name: string }>).map((q) => q.name).sort()).toEqual(
      [...api.queues.byName.keys()].sort(),
    );
  });

  it('Bull Board refuses changes another site makes the browser send; its own page and scripts pass', async () => {
    const basic = `Basic ${Buffer.from(`anyone:${api.keys.admin}`).toString('base64')}`;
    const add = (headers: Record<string, string>) =>
      call(api, '/admin/queues/api/queues/noop/add', {
        method: 'POST',
        headers: { authorization: basic, 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ name: 'noop', data: {} }),
      });
    const noop = api.queues.byName.get('noop')!;
    const before = await noop.count();
    const foreign: Record<string, string>[] = [
      { origin: 'https://evil.example' },
      { origin: 'null' },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site', origin: new URL(api.url).origin },
    ];
    for (const headers of foreign) {
      const r = await add(headers);
      expectProblemShape(r, 'forbidden', 403);
      expect(r.body.detail).toContain('another site');
    }
    expect(await noop.count()).toBe(before);
    // The board's own page (same origin) and a script (no Origin at all) may change things.
    expect((await add({ origin: new URL(api.url).origin, 'sec-fetch-site': 'same-origin' })).status).toBe(
      200,
    );
    expect((await add({})).status).toBe(200);
    expect(await noop.count()).toBe(before + 2);
    await noop.obliterate({ force: true });
  });

  it('Basic credentials whose password is not an admin key are refused with the Basic challenge', async () => {
    for (const password of ['wrong', api.keys.revoked]) {
      const basic = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`;
      const r = await call(api, '/admin/queues', { headers: { authorization: basic } });
      expectProblemShape(r, 'unauthorized', 401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Basic /);
    }
  });

  it('no API key appears in any log line, even for rejected requests', async () => {
    const presented = [
      api.keys.read,
      api.keys.admin,
      api.keys.revoked,
      'ty_guessed-key-that-is-not-stored-123456',
    ];
    for (const key of presented) {
      await call(api, '/v1/jobs/noop/1', { key });
      await call(api, '/admin/queues', {
        headers: { authorization: `Basic ${Buffer.from(`u:${key}`).toString('base64')}` },
      });
      await call(api, `/v1/jobs/noop/1`, {
        key,
        method: 'POST',
        body: '{bad',
        headers: { 'content-type': 'application/json' },
      });
    }
    const all = api.logs.join('\n');
    expect(api.logs.filter((l) => l.includes('"msg":"request"')).length).toBeGreaterThanOrEqual(
      presented.length * 3,
    );
    for (const key of presented) expect(all).not.toContain(key);
    for (const key of presented) expect(all).not.toContain(Buffer.from(`u:${key}`).toString('base64'));
  });
});
