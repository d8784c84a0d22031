import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, TaskyardProblemError, type ClientOptions } from '../../shared/client/index';
import { ManualClock } from '../../shared/clock';
import { claimIdempotencyKey, releaseIdempotencyKey } from '../../shared/db/idempotency-store';
import { requestFingerprint } from '../../shared/idempotency';
import { BACKENDS, startGate } from '../helpers/services';
import { startApi, type ApiUnderTest } from './api.harness';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const TTL_MS = 24 * 3_600_000;

/** The real fetch, with every answer's status and idempotency headers noted. */
function observedFetch() {
  const seen: Array<{ status: number; key: string | null; replayed: string | null }> = [];
  const fetchSpy: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    seen.push({
      status: res.status,
      key: new Headers(init?.headers).get('idempotency-key'),
      replayed: res.headers.get('idempotent-replayed'),
    });
    return res;
  };
  return { fetchSpy, seen };
}

const backupRows = async (api: ApiUnderTest) =>
  Number(
    (
      await api.db.db
        .selectFrom('backups')
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );

describe.each(BACKENDS)('typed client createBackup against the real api ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('client') });
  });
  afterAll(async () => {
    await api?.close();
  });

  const client = (opts: Partial<ClientOptions> = {}) =>
    createClient({ baseUrl: api.url, apiKey: api.keys.write, random: () => 0.5, ...opts });

  it('createBackup returns the queued backup, and the same key returns the same backup replayed', async () => {
    const { fetchSpy, seen } = observedFetch();
    const c = client({ fetch: fetchSpy });
    const before = await backupRows(api);
    const first = await c.createBackup({ label: 'nightly', idempotencyKey: 'client-same-1' });
    expect(first.status).toBe('queued');
    expect(first.label).toBe('nightly');
    const again = await c.createBackup({ label: 'nightly', idempotencyKey: 'client-same-1' });
    expect(again).toEqual(first);
    expect(seen).toEqual([
      { status: 202, key: 'client-same-1', replayed: null },
      { status: 202, key: 'client-same-1', replayed: 'true' },
    ]);
    expect(await backupRows(api)).toBe(before + 1);
    const read = createClient({ baseUrl: api.url, apiKey: api.keys.read });
    expect((await read.getBackup(first.id)).id).toBe(first.id);
  });

  it('a blank key creates a distinct backup on each of two calls, each under a fresh UUID v4', async () => {
    const { fetchSpy, seen } = observedFetch();
    const c = client({ fetch: fetchSpy });
    const before = await backupRows(api);
    const a = await c.createBackup({ idempotencyKey: '   ' });
    const b = await c.createBackup({ idempotencyKey: '   ' });
    expect(a.id).not.toBe(b.id);
    expect(seen).toHaveLength(2);
    for (const s of seen) {
      expect(s.key).toMatch(UUID_V4);
      expect(s.replayed).toBeNull();
    }
    expect(seen[0]!.key).not.toBe(seen[1]!.key);
    expect(await backupRows(api)).toBe(before + 2);
  });

  it('a 409 in flight is retried with the same key until the claim is released, then succeeds', async () => {
    const key = 'client-inflight-1';
    const claim = await claimIdempotencyKey(api.db.db, {
      principalId: api.principalIds.write,
      key,
      fingerprint: requestFingerprint('POST', '/v1/backups', {}),
      now: Date.now(),
      ttlMs: TTL_MS,
    });
    if (claim.outcome !== 'claimed') throw new Error(`could not claim the key first: ${claim.outcome}`);

    // Another task holds the key; it lets go only once the client has retried once and
    // is waiting for its second retry.
    const gate = startGate();
    const released = (async () => {
      await gate.wait();
      const ok = await releaseIdempotencyKey(api.db.db, {
        principalId: api.principalIds.write,
        key,
        claimToken: claim.claimToken,
      });
      if (!ok) throw new Error('the claim was not there to release');
    })();
    const delays: number[] = [];
    const { fetchSpy, seen } = observedFetch();
    const c = client({
      fetch: fetchSpy,
      sleep: async (ms) => {
        delays.push(ms);
        if (delays.length === 2) {
          gate.open();
          await released;
        }
      },
    });
    const before = await backupRows(api);

    const backup = await c.createBackup({ idempotencyKey: key });

    await released;
    expect(seen.map((s) => s.status)).toEqual([409, 409, 202]);
    expect(seen.map((s) => s.key)).toEqual([key, key, key]);
    // Retry-After: 1 is a floor above the 150 / 300 ms backoff.
    expect(delays).toEqual([1000, 1000]);
    expect(backup.status).toBe('queued');
    expect(await backupRows(api)).toBe(before + 1);
    const replay = await c.createBackup({ idempotencyKey: key });
    expect(replay.id).toBe(backup.id);
  });

  it('a bad API key gets TaskyardProblemError unauthorized at once, without the key in its message', async () => {
    const badKey = 'ty_this_key_was_never_issued_0123456789';
    const { fetchSpy, seen } = observedFetch();
    const c = createClient({ baseUrl: api.url, apiKey: badKey, fetch: fetchSpy });
    let err: unknown;
    try {
      await c.createBackup();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TaskyardProblemError);
    const problem = err as TaskyardProblemError;
    expect(problem.status).toBe(401);
    expect(problem.slug).toBe('unauthorized');
    expect(problem.detail.length).toBeGreaterThan(0);
    expect(problem.instance).toBeTruthy();
    expect(`${problem.message}\n${problem.stack}\n${JSON.stringify(problem.body)}`).not.toContain(badKey);
    expect(seen).toHaveLength(1);
  });
});

describe.each(BACKENDS)('typed client listBackups paging ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  const clock = new ManualClock('2026-06-01T00:00:00.000Z');
  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('clientpage'), clock });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('paging over 5 backups with limit 2 returns all 5 once, newest first', async () => {
    const writer = createClient({ baseUrl: api.url, apiKey: api.keys.write });
    const created: string[] = [];
    for (let i = 1; i <= 5; i += 1) {
      created.push((await writer.createBackup({ label: `b${i}` })).id);
      clock.advance(1000);
    }
    const reader = createClient({ baseUrl: api.url, apiKey: api.keys.read });
    const pages: string[][] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await reader.listBackups({ limit: 2, cursor });
      pages.push(page.items.map((b) => b.id));
      if (page.next_cursor === null) break;
      cursor = page.next_cursor;
    }
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual([...created].reverse());

    const iterated: string[] = [];
    for await (const b of reader.iterateBackups({ limit: 2 })) iterated.push(b.id);
    expect(iterated).toEqual([...created].reverse());
  });
});
