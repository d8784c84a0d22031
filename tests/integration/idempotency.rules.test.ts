import express from 'express';
import { sql } from 'kysely';
import type { Server } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IDEMPOTENCY_LEASE_MS } from '../../api/middleware/idempotency';
import { jsonBody, refuseBadBody } from '../../api/middleware/json-body';
import { problemHandler } from '../../api/middleware/problem';
import { requestContext } from '../../api/middleware/request-id';
import { ManualClock } from '../../shared/clock';
import { claimIdempotencyKey } from '../../shared/db/idempotency-store';
import { requestFingerprint } from '../../shared/idempotency';
import { createLogger } from '../../shared/logger';
import { BACKENDS, waitFor } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

const TTL_MS = 24 * 3_600_000;

describe.each(BACKENDS)('Idempotency-Key on POST /v1/backups ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  const clock = new ManualClock('2026-06-01T00:00:00.000Z');

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('idem'), clock });
  });
  afterAll(async () => {
    await api?.close();
  });

  const post = (key: string | undefined, body: unknown = {}, path = '/v1/backups') =>
    call(api, path, {
      method: 'POST',
      key: api.keys.write,
      headers: {
        'content-type': 'application/json',
        ...(key === undefined ? {} : { 'idempotency-key': key }),
      },
      body: JSON.stringify(body),
    });
  const backupRows = async () =>
    Number(
      (
        await api.db.db
          .selectFrom('backups')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  it('a request without the header gets 400 idempotency-key-missing and stores nothing', async () => {
    const before = await backupRows();
    const r = await post(undefined);
    expectProblemShape(r, 'idempotency-key-missing', 400);
    expect(await backupRows()).toBe(before);
  });

  it.each([
    ['empty', ''],
    ['whitespace only', '   '],
    ['256 characters', 'k'.repeat(256)],
    ['an inner space', 'a b'],
    ['a control character', 'a\tb'],
    ['an empty quoted string', '""'],
    ['an unterminated quoted string', '"abc'],
    ['a quoted string escaping another character than " or \\', String.raw`"a\b"`],
    ['a quoted string with text after its closing quote', '"a"b'],
  ])('a key that is %s gets 400 idempotency-key-invalid', async (_name, key) => {
    const before = await backupRows();
    const r = await post(key);
    expectProblemShape(r, 'idempotency-key-invalid', 400);
    expect(await backupRows()).toBe(before);
  });

  it('a key of exactly 255 visible characters is accepted', async () => {
    const r = await post('~'.repeat(255));
    expect(r.status).toBe(202);
  });

  it('a completed key replays the same status, body and Location with Idempotent-Replayed', async () => {
    const first = await post('replay-1', { label: 'nightly' });
    expect(first.status).toBe(202);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    const again = await post('replay-1', { label: 'nightly' });
    expect(again.status).toBe(202);
    expect(again.body).toEqual(first.body);
    expect(again.headers.get('location')).toBe(first.headers.get('location'));
    expect(again.headers.get('location')).toBe(`/v1/backups/${first.body.id}`);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
  });

  it('an RFC 8941 quoted key is unquoted: "k" and k name the same request', async () => {
    const first = await post('"quoted-1"');
    const bare = await post('quoted-1');
    expect(first.status).toBe(202);
    expect(bare.body.id).toBe(first.body.id);
    expect(bare.headers.get('idempotent-replayed')).toBe('true');
  });

  it('a quoted key unescapes \\\\ and \\": "a\\\\" names the key a\\', async () => {
    const quoted = await post('"esc\\\\"');
    expect(quoted.status).toBe(202);
    const bare = await post('esc\\');
    expect(bare.body.id).toBe(quoted.body.id);
    expect(bare.headers.get('idempotent-replayed')).toBe('true');
  });

  it('two Idempotency-Key headers get 400, not one key joined from both', async () => {
    const before = await backupRows();
    const { port } = new URL(api.url);
    const raw = await new Promise<string>((resolve, reject) => {
      // Written, not ended: a client that half-closes is answered with nothing.
      const socket = net.connect(Number(port), '127.0.0.1', () =>
        socket.write(
          'POST /v1/backups HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' +
            `Authorization: Bearer ${api.keys.write}\r\nContent-Type: application/json\r\n` +
            'Idempotency-Key: dup-a\r\nIdempotency-Key: dup-b\r\nContent-Length: 2\r\n\r\n{}',
        ),
      );
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    expect(raw).toContain('idempotency-key-invalid');
    expect(raw).toContain('send exactly one Idempotency-Key header (this request has 2)');
    expect(await backupRows()).toBe(before);
  });

  it('the fingerprint ignores key order in the body', async () => {
    const a = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'order-1' },
      body: '{"label":"x"}',
    });
    const b = await post('order-1', { label: 'x' });
    expect(b.body.id).toBe(a.body.id);
  });

  it('the same key with another body gets 422 idempotency-key-mismatch', async () => {
    expect((await post('mismatch-1', { label: 'a' })).status).toBe(202);
    const before = await backupRows();
    const r = await post('mismatch-1', { label: 'b' });
    expectProblemShape(r, 'idempotency-key-mismatch', 422);
    expect(await backupRows()).toBe(before);
  });

  it('the same key sent to another path gets 422 idempotency-key-mismatch', async () => {
    const created = await post('path-1');
    expect(created.status).toBe(202);
    const r = await post('path-1', {}, `/v1/backups/${created.body.id}/verify`);
    expectProblemShape(r, 'idempotency-key-mismatch', 422);
  });

  it('spellings Express routes alike (case, trailing slash, an upper-case id) are the same request: replayed, not 422', async () => {
    const created = await post('spelling-1', { label: 's' });
    expect(created.status).toBe(202);
    const before = await backupRows();
    for (const path of ['/V1/Backups', '/v1/backups/']) {
      const again = await post('spelling-1', { label: 's' }, path);
      expect(again.status).toBe(202);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.body).toEqual(created.body);
    }
    expect(await backupRows()).toBe(before);

    const id = created.body.id as string;
    // No worker runs here, so the backup is not finished and verify answers 409; that answer is
    // stored like any other, and the upper-case spelling must get it back, not a 422.
    const verify = await post('spelling-2', {}, `/v1/backups/${id}/verify`);
    expect(verify.status).toBe(409);
    const upper = await post('spelling-2', {}, `/v1/backups/${id.toUpperCase()}/verify`);
    expect(upper.status).toBe(409);
    expect(upper.headers.get('idempotent-replayed')).toBe('true');
    expect(upper.body).toEqual(verify.body);
  });

  it('keys are scoped per principal: another key holder with the same key gets its own backup', async () => {
    const mine = await post('shared-key');
    const theirs = await call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.admin,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'shared-key' },
      body: '{}',
    });
    expect(theirs.status).toBe(202);
    expect(theirs.body.id).not.toBe(mine.body.id);
  });

  it('a second request while the first is in flight gets 409 with Retry-After: 1', async () => {
    await claimIdempotencyKey(api.db.db, {
      principalId: api.principalIds.write,
      key: 'inflight-1',
      fingerprint: requestFingerprint('POST', '/v1/backups', {}),
      now: clock.now().getTime(),
      ttlMs: TTL_MS,
    });
    const r = await post('inflight-1');
    expectProblemShape(r, 'idempotency-key-in-flight', 409);
    expect(r.headers.get('retry-after')).toBe('1');
  });

  it("a crashed holder's in-flight claim is taken over once its 30 s lease lapses", async () => {
    await claimIdempotencyKey(api.db.db, {
      principalId: api.principalIds.write,
      key: 'lease-1',
      fingerprint: requestFingerprint('POST', '/v1/backups', {}),
      now: clock.now().getTime(),
      ttlMs: TTL_MS,
    });
    expect((await post('lease-1')).status).toBe(409);
    clock.advance(IDEMPOTENCY_LEASE_MS + 1);
    const r = await post('lease-1');
    expect(r.status).toBe(202);
    expect(r.headers.get('idempotent-replayed')).toBeNull();
  });

  it('an expired record counts as absent even before pruning', async () => {
    const first = await post('expiry-1');
    clock.advance(TTL_MS - 1);
    expect((await post('expiry-1')).body.id).toBe(first.body.id);
    clock.advance(2);
    const fresh = await post('expiry-1');
    expect(fresh.status).toBe(202);
    expect(fresh.headers.get('idempotent-replayed')).toBeNull();
    expect(fresh.body.id).not.toBe(first.body.id);
  });

  it('a 4xx the handler produced after the claim is stored and replayed', async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    const r1 = await post('notfound-1', {}, `/v1/backups/${missing}/verify`);
    expectProblemShape(r1, 'not-found', 404);
    const r2 = await post('notfound-1', {}, `/v1/backups/${missing}/verify`);
    expect(r2.status).toBe(404);
    expect(r2.headers.get('idempotent-replayed')).toBe('true');
    expect(r2.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });

  it('200 concurrent POSTs with one key make exactly one backup and one job; each answer is the 202 or 409 in flight', async () => {
    const rowsBefore = await backupRows();
    const jobsBefore = (await api.queues.get('backups').getJobCounts('waiting')).waiting ?? 0;
    const responses = await Promise.all(
      Array.from({ length: 200 }, () => post('storm-1', { label: 'storm' })),
    );
    const accepted = responses.filter((r) => r.status === 202);
    const inFlight = responses.filter((r) => r.status === 409);
    expect(accepted.length + inFlight.length).toBe(200);
    expect(accepted.length).toBeGreaterThanOrEqual(1);
    for (const r of accepted) expect(r.body).toEqual(accepted[0]!.body);
    for (const r of inFlight) expectProblemShape(r, 'idempotency-key-in-flight', 409);
    expect(await backupRows()).toBe(rowsBefore + 1);
    expect((await api.queues.get('backups').getJobCounts('waiting')).waiting).toBe(jobsBefore + 1);
  });
});

describe.each(BACKENDS)('Idempotency claim release on 5xx ($backend)', ({ backend, makeUrl }) => {
  let api: ApiUnderTest;
  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('idem5xx') });
  });
  afterAll(async () => {
    await api?.close();
  });

  /** A bare route behind the real idempotency middleware (principal: the write key), listening. */
  async function keyedRoute(path: string, handler: express.RequestHandler): Promise<Server> {
    const logger = createLogger({ level: 'silent' });
    const app = express();
    app.use(requestContext({ logger, clock: new ManualClock() }));
    app.use((req, _res, next) => {
      req.principal = { id: api.principalIds.write, name: 'w', scopes: ['write'] };
      next();
    });
    app.use(jsonBody({ limitBytes: 65536 }), refuseBadBody);
    const keyed = idempotency(
      { db: api.db.db, config: { IDEMPOTENCY_TTL_HOURS: 24 }, clock: new ManualClock() },
      { required: true },
    );
    app.post(path, keyed, handler);
    app.use(problemHandler(logger));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    return server;
  }

  it('a COMMIT that fails after the claim was completed inside it still releases the claim', async () => {
    const db = api.db.db;
    // A backup insert adds a child row whose deferred foreign key is only checked at COMMIT.
    await sql`create table commit_breaker_parent (id integer primary key)`.execute(db);
    await sql`create table commit_breaker (id integer primary key, parent_id integer not null references commit_breaker_parent (id) deferrable initially deferred)`.execute(
      db,
    );
    if (backend === 'sqlite') {
      await sql`create trigger break_commit after insert on backups begin insert into commit_breaker (id, parent_id) values (new.rowid, 999); end`.execute(
        db,
      );
    } else {
      await sql`create function break_commit() returns trigger language plpgsql as $$ begin insert into commit_breaker (id, parent_id) values (1, 999); return new; end $$`.execute(
        db,
      );
      await sql`create trigger break_commit after insert on backups for each row execute function break_commit()`.execute(
        db,
      );
    }
    const post = () =>
      call(api, '/v1/backups', {
        method: 'POST',
        key: api.keys.write,
        headers: { 'content-type': 'application/json', 'idempotency-key': 'commit-fails' },
        body: '{}',
      });
    const claim = () =>
      db.selectFrom('idempotency_keys').selectAll().where('key', '=', 'commit-fails').executeTakeFirst();
    try {
      const failed = await post();
      expect(failed.status).toBe(500);
      await waitFor(async () => (await claim()) === undefined, { timeoutMs: 5_000, what: 'claim released' });
    } finally {
      if (backend === 'sqlite') await sql`drop trigger break_commit`.execute(db);
      else {
        await sql`drop trigger break_commit on backups`.execute(db);
        await sql`drop function break_commit()`.execute(db);
      }
    }
    expect(await db.selectFrom('backups').selectAll().execute()).toHaveLength(0);
    const retried = await post();
    expect(retried.status).toBe(202);
    expect(await db.selectFrom('backups').selectAll().execute()).toHaveLength(1);
  });

  it('a client that hangs up while the route runs: the claim stays in flight and the retry replays the answer', async () => {
    let runs = 0;
    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    let sawClose!: () => void;
    const closed = new Promise<void>((r) => (sawClose = r));
    const server = await keyedRoute('/slow', async (_req, res) => {
      runs += 1;
      res.once('close', sawClose);
      // The write outside any claim transaction, as POST /v1/providers does it.
      await gate;
      res.status(201).location('/slow/1').json({ run: runs });
    });
    const port = (server.address() as AddressInfo).port;
    const send = () =>
      fetch(`http://127.0.0.1:${port}/slow`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'hang-up-1' },
        body: '{}',
      });
    const record = () =>
      api.db.db.selectFrom('idempotency_keys').selectAll().where('key', '=', 'hang-up-1').executeTakeFirst();
    try {
      const socket = net.connect(port, '127.0.0.1');
      await new Promise((r) => socket.once('connect', r));
      socket.write(
        'POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
          'Idempotency-Key: hang-up-1\r\nContent-Length: 2\r\n\r\n{}',
      );
      await waitFor(async () => runs === 1, { timeoutMs: 5_000, what: 'the route runs' });
      socket.destroy();
      await closed;
      // The route has not answered yet: a retry is told to wait, not run a second time.
      const during = await send();
      expect(during.status).toBe(409);
      expect(during.headers.get('retry-after')).toBe('1');
      expect((await record())?.state).toBe('in_flight');

      openGate();
      await waitFor(async () => (await record())?.state === 'completed', {
        timeoutMs: 5_000,
        what: 'the answer nobody received is stored',
      });
      const retry = await send();
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(retry.headers.get('location')).toBe('/slow/1');
      expect(await retry.json()).toEqual({ run: 1 });
      expect(runs).toBe(1);
    } finally {
      openGate();
      await new Promise((r) => server.close(r));
    }
  });

  it('a 5xx releases the claim so a retry with the same key runs again', async () => {
    let runs = 0;
    const server = await keyedRoute('/flaky', (_req, res) => {
      runs += 1;
      if (runs === 1) throw new Error('boom');
      res.status(201).json({ run: runs });
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/flaky`;
    const send = () =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'five-1' },
        body: '{}',
      });
    try {
      expect((await send()).status).toBe(500);
      const key = () =>
        api.db.db.selectFrom('idempotency_keys').selectAll().where('key', '=', 'five-1').executeTakeFirst();
      // The release happens when the response closes, just after the client has it.
      await waitFor(async () => (await key()) === undefined, { timeoutMs: 5_000, what: 'claim released' });
      const second = await send();
      expect(second.status).toBe(201);
      expect(await second.json()).toEqual({ run: 2 });
      expect(runs).toBe(2);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
