import { describe, expect, it } from 'vitest';
import type { BackupView } from '../../shared/contract/backups';
import {
  chooseIdempotencyKey,
  createClient,
  retryDelayMs,
  TaskyardNetworkError,
  TaskyardProblemError,
  type ClientOptions,
} from '../../shared/client/index';
import { DEFAULT_RETRY } from '../../shared/client/retry-policy';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const API_KEY = 'ty_unit_secret_key_0123456789';

const view = (id = '0b7e6a52-3c1f-4d5e-9a8b-1c2d3e4f5a6b'): BackupView => ({
  id,
  label: null,
  status: 'queued',
  trigger: 'manual',
  created_at: '2026-06-01T00:00:00.000Z',
  started_at: null,
  finished_at: null,
  attempts: 0,
  size_bytes: null,
  sha256: null,
  schema_version: null,
  row_counts: null,
  error: null,
  job_id: 'backup-11111111-1111-4111-8111-111111111111',
  verification: { status: null, verified_at: null, error: null, job_id: null },
});

type Step = () => Response | Promise<Response>;

const accepted =
  (v: BackupView = view()): Step =>
  () =>
    new Response(JSON.stringify(v), { status: 202, headers: { 'content-type': 'application/json' } });
const problem =
  (status: number, slug: string, detail = `detail of ${slug}`, headers: Record<string, string> = {}): Step =>
  () =>
    new Response(
      JSON.stringify({
        type: `urn:taskyard:problem:${slug}`,
        title: slug,
        status,
        detail,
        instance: 'req-1',
      }),
      { status, headers: { 'content-type': 'application/problem+json', ...headers } },
    );
const throws =
  (err: unknown): Step =>
  () => {
    throw err;
  };

/** A fetch bound to the real signature that answers from a script, one step per request. */
function scripted(steps: Step[]) {
  const calls: Array<{ url: string; method: string; headers: Headers; body: string | undefined }> = [];
  const fetchStub: typeof fetch = async (input, init) => {
    calls.push({
      url: String(input),
      method: init?.method ?? 'GET',
      headers: new Headers(init?.headers),
      body: typeof init?.body === 'string' ? init.body : undefined,
    });
    const step = steps[calls.length - 1];
    if (!step) throw new Error(`unexpected request #${calls.length}`);
    return step();
  };
  return { fetchStub, calls, keys: () => calls.map((c) => c.headers.get('idempotency-key')) };
}

function clientWith(steps: Step[], opts: Partial<ClientOptions> = {}) {
  const stub = scripted(steps);
  const sleeps: number[] = [];
  const client = createClient({
    baseUrl: 'http://api.test',
    apiKey: API_KEY,
    fetch: stub.fetchStub,
    random: () => 0.5,
    sleep: async (ms) => void sleeps.push(ms),
    ...opts,
  });
  return { client, sleeps, ...stub };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

describe('createBackup: choice of Idempotency-Key', () => {
  it.each([
    ['absent', undefined],
    ['empty', ''],
    ['spaces only', '   '],
    ['tabs and newlines only', '\t\n \r'],
  ])('a key that is %s is replaced by a fresh UUID v4', async (_name, given) => {
    const { client, keys } = clientWith([accepted()]);
    await client.createBackup({ idempotencyKey: given });
    expect(keys()).toHaveLength(1);
    expect(keys()[0]).toMatch(UUID_V4);
  });

  it('two calls without a key send two different UUIDs', async () => {
    const { client, keys } = clientWith([accepted(), accepted()]);
    await client.createBackup();
    await client.createBackup({ idempotencyKey: ' ' });
    expect(new Set(keys()).size).toBe(2);
  });

  it('a given key is sent verbatim', async () => {
    const { client, keys } = clientWith([accepted()]);
    await client.createBackup({ idempotencyKey: 'Nightly-2026-06-01_"x"' });
    expect(keys()).toEqual(['Nightly-2026-06-01_"x"']);
  });

  it('a given key with surrounding spaces is kept as given, not trimmed into another key', () => {
    expect(chooseIdempotencyKey(' k1 ')).toBe(' k1 ');
    expect(chooseIdempotencyKey('k1', () => 'unused')).toBe('k1');
    expect(chooseIdempotencyKey(' ', () => 'fresh')).toBe('fresh');
  });

  it('sends the bearer key, JSON and the label to POST /v1/backups', async () => {
    const { client, calls } = clientWith([accepted()]);
    await client.createBackup({ label: 'before upgrade', idempotencyKey: 'k-1' });
    expect(calls).toHaveLength(1);
    expect(calls[0]!.url).toBe('http://api.test/v1/backups');
    expect(calls[0]!.method).toBe('POST');
    expect(calls[0]!.headers.get('authorization')).toBe(`Bearer ${API_KEY}`);
    expect(calls[0]!.headers.get('content-type')).toBe('application/json');
    expect(JSON.parse(calls[0]!.body!)).toEqual({ label: 'before upgrade' });
  });
});

describe('createBackup: retry policy', () => {
  it('retries 503 twice and returns the backup, with the same key on every try', async () => {
    const { client, calls, keys, sleeps } = clientWith([
      problem(503, 'dependency-unavailable'),
      problem(503, 'dependency-unavailable'),
      accepted(view('11111111-1111-4111-8111-111111111111')),
    ]);
    const backup = await client.createBackup({ label: 'x' });
    expect(backup.id).toBe('11111111-1111-4111-8111-111111111111');
    expect(calls).toHaveLength(3);
    expect(new Set(keys()).size).toBe(1);
    expect(keys()[0]).toMatch(UUID_V4);
    expect(new Set(calls.map((c) => c.body)).size).toBe(1);
    // random 0.5, base 200: 100 + 50, then 200 + 100.
    expect(sleeps).toEqual([150, 300]);
  });

  it('retries network failures: a fetch TypeError, ECONNREFUSED and ECONNRESET', async () => {
    const refused = new TypeError('fetch failed', {
      cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
    });
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    const { client, calls, keys, sleeps } = clientWith([
      throws(new TypeError('fetch failed')),
      throws(refused),
      throws(reset),
      accepted(),
    ]);
    await client.createBackup({ idempotencyKey: 'net-1' });
    expect(calls).toHaveLength(4);
    expect(keys()).toEqual(['net-1', 'net-1', 'net-1', 'net-1']);
    expect(sleeps).toHaveLength(3);
  });

  it('a 409 idempotency-key-in-flight is retried no sooner than its Retry-After', async () => {
    const { client, calls, sleeps, keys } = clientWith([
      problem(409, 'idempotency-key-in-flight', 'still running', { 'retry-after': '1' }),
      accepted(),
    ]);
    await client.createBackup({ idempotencyKey: 'busy-1' });
    expect(calls).toHaveLength(2);
    expect(keys()).toEqual(['busy-1', 'busy-1']);
    expect(sleeps).toEqual([1000]);
  });

  it('a 429 rate-limited is retried with the same key no sooner than its Retry-After', async () => {
    const { client, calls, sleeps, keys } = clientWith([
      problem(429, 'rate-limited', 'too many', { 'retry-after': '12' }),
      accepted(),
    ]);
    await client.createBackup({ idempotencyKey: 'limited-1' });
    expect(calls).toHaveLength(2);
    expect(keys()).toEqual(['limited-1', 'limited-1']);
    expect(sleeps).toEqual([12000]);
  });

  it('a 503 Retry-After longer than the backoff cap is still honoured', async () => {
    const { client, sleeps } = clientWith([
      problem(503, 'dependency-unavailable', 'redis down', { 'retry-after': '7' }),
      accepted(),
    ]);
    await client.createBackup();
    expect(sleeps).toEqual([7000]);
  });

  it('gives up after the configured attempts and throws the last failure', async () => {
    const { client, calls, sleeps } = clientWith(
      [1, 2, 3].map((n) => problem(503, 'dependency-unavailable', `try ${n}`)),
      { retry: { attempts: 3 } },
    );
    const err = await rejection(client.createBackup());
    expect(err).toBeInstanceOf(TaskyardProblemError);
    expect((err as TaskyardProblemError).detail).toBe('try 3');
    expect(calls).toHaveLength(3);
    expect(sleeps).toHaveLength(2);
  });

  it('by default makes 5 tries with exponential delays capped at maxDelayMs', async () => {
    const failing = Array.from({ length: 5 }, () => throws(new TypeError('fetch failed')));
    const { client, calls, sleeps } = clientWith(failing, { retry: { maxDelayMs: 500 } });
    const err = await rejection(client.createBackup());
    expect(err).toBeInstanceOf(TaskyardNetworkError);
    expect(calls).toHaveLength(5);
    // exp = 200, 400, 500 (cap), 500; equal jitter with random 0.5 takes 3/4 of each.
    expect(sleeps).toEqual([150, 300, 375, 375]);
  });

  it.each([
    [400, 'validation-failed'],
    [400, 'idempotency-key-invalid'],
    [401, 'unauthorized'],
    [403, 'forbidden'],
    [409, 'conflict'],
    [422, 'idempotency-key-mismatch'],
  ])('a %i %s is thrown at once, without a retry', async (status, slug) => {
    const { client, calls, sleeps } = clientWith([problem(status, slug), accepted()]);
    const err = await rejection(client.createBackup());
    expect(err).toBeInstanceOf(TaskyardProblemError);
    expect((err as TaskyardProblemError).slug).toBe(slug);
    expect(calls).toHaveLength(1);
    expect(sleeps).toHaveLength(0);
  });

  it('an error that is not a network failure is not retried', async () => {
    const bug = new RangeError('a bug in an injected fetch');
    const { client, calls } = clientWith([throws(bug), accepted()]);
    expect(await rejection(client.createBackup())).toBe(bug);
    expect(calls).toHaveLength(1);
  });

  it('aborting during the backoff wait stops the call with the signal reason and sends nothing more', async () => {
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    const { client, calls } = clientWith([problem(503, 'dependency-unavailable'), accepted()], {
      sleep: (_ms, signal) =>
        new Promise<void>((_resolve, reject) => {
          signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
          controller.abort(reason);
        }),
    });
    expect(await rejection(client.createBackup({ signal: controller.signal }))).toBe(reason);
    expect(calls).toHaveLength(1);
  });

  it('the jittered delay stays between half and all of the exponential step', () => {
    expect(retryDelayMs(1, DEFAULT_RETRY, () => 0, null)).toBe(100);
    expect(retryDelayMs(1, DEFAULT_RETRY, () => 0.999999, null)).toBe(200);
    expect(retryDelayMs(3, DEFAULT_RETRY, () => 0, null)).toBe(400);
    expect(retryDelayMs(10, DEFAULT_RETRY, () => 1, null)).toBe(5000);
    expect(retryDelayMs(1, DEFAULT_RETRY, () => 1, 1000)).toBe(1000);
  });
});
