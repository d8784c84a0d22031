import { describe, expect, it } from 'vitest';
import {
  createClient,
  parseRetryAfter,
  TaskyardProblemError,
  TaskyardResponseError,
  type ClientOptions,
} from '../../shared/client/index';

const API_KEY = 'ty_unit_secret_key_abcdef';
const ID = '0b7e6a52-3c1f-4d5e-9a8b-1c2d3e4f5a6b';

const view = (id = ID) => ({
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
  verification: { status: null, verified_at: null, error: null },
});

type Answer = { status: number; body: string; headers?: Record<string, string> };
const json = (status: number, body: unknown, headers: Record<string, string> = {}): Answer => ({
  status,
  body: JSON.stringify(body),
  headers: { 'content-type': 'application/json', ...headers },
});

/** A fetch bound to the real signature answering from a list, one answer per request. */
function clientAnswering(answers: Answer[], opts: Partial<ClientOptions> = {}) {
  const urls: string[] = [];
  const fetchStub: typeof fetch = async (input) => {
    urls.push(String(input));
    const a = answers[urls.length - 1];
    if (!a) throw new Error(`unexpected request #${urls.length}`);
    return new Response(a.body, { status: a.status, headers: a.headers });
  };
  const client = createClient({
    baseUrl: 'http://api.test/prefix/',
    apiKey: API_KEY,
    fetch: fetchStub,
    random: () => 0,
    sleep: async () => undefined,
    ...opts,
  });
  return { client, urls };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

describe('client responses', () => {
  it('a problem+json answer becomes a TaskyardProblemError with every field and its detail in the message', async () => {
    const doc = {
      type: 'urn:taskyard:problem:validation-failed',
      title: 'Request validation failed',
      status: 400,
      detail: 'The request has 1 invalid field(s); see errors.',
      instance: 'req-42',
      errors: [{ path: 'body.label', message: 'label must be at most 200 characters' }],
    };
    const { client } = clientAnswering([
      { status: 400, body: JSON.stringify(doc), headers: { 'content-type': 'application/problem+json' } },
    ]);
    const err = (await rejection(client.createBackup({ label: 'x' }))) as TaskyardProblemError;
    expect(err).toBeInstanceOf(TaskyardProblemError);
    expect(err.status).toBe(400);
    expect(err.slug).toBe('validation-failed');
    expect(err.title).toBe(doc.title);
    expect(err.detail).toBe(doc.detail);
    expect(err.instance).toBe('req-42');
    expect(err.body).toEqual(doc);
    expect(err.retryAfterMs).toBeNull();
    expect(err.message).toContain(doc.detail);
  });

  it('the API key never appears in an error, even when the server echoes it', async () => {
    const { client } = clientAnswering([
      {
        status: 401,
        body: JSON.stringify({
          type: 'urn:taskyard:problem:unauthorized',
          title: 'Authentication required',
          status: 401,
          detail: `unknown key ${API_KEY}`,
          instance: 'r',
        }),
        headers: { 'content-type': 'application/problem+json' },
      },
    ]);
    const err = (await rejection(client.getBackup(ID))) as TaskyardProblemError;
    expect(err.slug).toBe('unauthorized');
    expect(err.detail).toBe('unknown key [redacted]');
    expect(`${err.message} ${err.stack} ${JSON.stringify(err.body)}`).not.toContain(API_KEY);
  });

  it('an API key that could not be sent as a header is refused up front without being quoted', () => {
    const bad = 'secret\nvalue';
    let thrown: unknown;
    try {
      createClient({ baseUrl: 'http://api.test', apiKey: bad });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect(String(thrown)).not.toContain('secret');
  });

  it('an error status without a problem document is a TaskyardResponseError, and a 502 is retried', async () => {
    const html = { status: 502, body: '<html>bad gateway</html>', headers: { 'content-type': 'text/html' } };
    const { client, urls } = clientAnswering([html, html], { retry: { attempts: 2 } });
    const err = (await rejection(client.getBackup(ID))) as TaskyardResponseError;
    expect(err).toBeInstanceOf(TaskyardResponseError);
    expect(err.status).toBe(502);
    expect(err.message).toContain('bad gateway');
    expect(urls).toHaveLength(2);
  });

  it('a success body that breaks the contract names the field and is not retried', async () => {
    const { client, urls } = clientAnswering([json(202, { ...view(), id: 'not-a-uuid', status: 'weird' })]);
    const err = (await rejection(client.createBackup())) as TaskyardResponseError;
    expect(err).toBeInstanceOf(TaskyardResponseError);
    expect(err.message).toMatch(/id: /);
    expect(err.message).toMatch(/status: /);
    expect(urls).toHaveLength(1);
  });

  it('a success body that is not JSON is a TaskyardResponseError', async () => {
    const { client } = clientAnswering([{ status: 200, body: 'ok' }]);
    expect(await rejection(client.getBackup(ID))).toBeInstanceOf(TaskyardResponseError);
  });

  it('keeps the base path and encodes ids and query parameters', async () => {
    const { client, urls } = clientAnswering([
      json(200, view()),
      json(200, { items: [], next_cursor: null }),
    ]);
    await client.getBackup(ID);
    await client.listBackups({ limit: 2, cursor: 'a+b/c=' });
    expect(urls).toEqual([
      `http://api.test/prefix/v1/backups/${ID}`,
      'http://api.test/prefix/v1/backups?limit=2&cursor=a%2Bb%2Fc%3D',
    ]);
  });

  it('iterateBackups follows next_cursor until it is null', async () => {
    const ids = [1, 2, 3].map((n) => `0000000${n}-0000-4000-8000-000000000000`);
    const { client, urls } = clientAnswering([
      json(200, { items: [view(ids[0]), view(ids[1])], next_cursor: 'c1' }),
      json(200, { items: [view(ids[2])], next_cursor: null }),
    ]);
    const seen: string[] = [];
    for await (const b of client.iterateBackups({ limit: 2 })) seen.push(b.id);
    expect(seen).toEqual(ids);
    expect(urls.map((u) => new URL(u).search)).toEqual(['?limit=2', '?limit=2&cursor=c1']);
  });

  it('iterateBackups stops with an error when the api hands back a cursor twice', async () => {
    const page = json(200, { items: [view()], next_cursor: 'same' });
    const { client } = clientAnswering([page, page, page]);
    const drain = async () => {
      for await (const _b of client.iterateBackups()) void _b;
    };
    expect(await rejection(drain())).toBeInstanceOf(TaskyardResponseError);
  });

  it('verifyBackup posts {} with a key to the verify path', async () => {
    const { client, urls } = clientAnswering([json(202, view())]);
    const b = await client.verifyBackup(ID, { idempotencyKey: 'v-1' });
    expect(b.id).toBe(ID);
    expect(urls).toEqual([`http://api.test/prefix/v1/backups/${ID}/verify`]);
  });

  it('Retry-After is read as delta-seconds or as an HTTP-date', () => {
    const now = Date.parse('2026-06-01T00:00:00Z');
    expect(parseRetryAfter('1', now)).toBe(1000);
    expect(parseRetryAfter('Mon, 01 Jun 2026 00:00:03 GMT', now)).toBe(3000);
    expect(parseRetryAfter('Sun, 31 May 2026 00:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });
});
