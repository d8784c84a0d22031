import type { z } from 'zod';
import { PROBLEM_CONTENT_TYPE } from '../contract/problem';
import {
  parseRetryAfter,
  problemSlug,
  TaskyardNetworkError,
  TaskyardProblemError,
  TaskyardResponseError,
} from './problem-error';
import { isRetryable, resolveRetry, retryAfterOf, retryDelayMs, type RetryOptions } from './retry-policy';

/** Waits `ms`, or rejects with `signal.reason` as soon as the signal aborts. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

export interface HttpClientOptions {
  /** Where the api answers, e.g. `http://127.0.0.1:3000`; a path prefix is kept. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>`; never appears in an error. */
  apiKey: string;
  /** @defaultValue globalThis.fetch */
  fetch?: typeof fetch;
  /** @defaultValue `{ attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 }` */
  retry?: RetryOptions;
  /** Jitter source in [0, 1). @defaultValue Math.random */
  random?: () => number;
  /** Backoff wait between tries. @defaultValue a timer that the call's signal cancels */
  sleep?: Sleep;
  /** Wall clock in ms, for Retry-After given as an HTTP-date. @defaultValue Date.now */
  now?: () => number;
}

export interface RequestSpec<T> {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path below `baseUrl`, starting with `/`, already encoded. */
  path: string;
  query?: Record<string, string | number | undefined>;
  /** Sent as JSON when present. */
  body?: unknown;
  headers?: Record<string, string>;
  /** Shape of a successful answer's body; a mismatch throws TaskyardResponseError. */
  schema: z.ZodType<T>;
  signal?: AbortSignal;
  /**
   * Retry transient failures (see isRetryable). Only for requests that are safe to
   * repeat: reads, and writes that carry the same Idempotency-Key on every try.
   * @defaultValue true
   */
  retry?: boolean;
  /** Called after every try that got an HTTP answer (e.g. to see Idempotent-Replayed). */
  onResponse?: (info: { status: number; headers: Headers; attempt: number }) => void;
}

export interface HttpResult<T> {
  status: number;
  headers: Headers;
  body: T;
  /** Tries made, the successful one included. */
  attempts: number;
}

export interface HttpClient {
  /**
   * Send one logical request, retrying transient failures with backoff.
   * @throws TaskyardProblemError for a problem+json answer (the last one after retries)
   * @throws TaskyardResponseError for an answer that is not what the contract says
   * @throws TaskyardNetworkError when no answer came back on the last try
   * @throws the signal's reason when the call's AbortSignal fires
   */
  send<T>(spec: RequestSpec<T>): Promise<HttpResult<T>>;
}

/** Connection-level failures: nothing reached the handler, or its answer was cut off. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
]);

export function createHttpClient(opts: HttpClientOptions): HttpClient {
  const base = normaliseBaseUrl(opts.baseUrl);
  // Refuse a key the Headers class would reject: its TypeError quotes the value.
  if (typeof opts.apiKey !== 'string' || !/^[\x21-\x7e]+$/.test(opts.apiKey)) {
    throw new TypeError('apiKey must be a non-empty string of visible ASCII characters');
  }
  const apiKey = opts.apiKey;
  const doFetch = opts.fetch ?? globalThis.fetch;
  const policy = resolveRetry(opts.retry);
  const random = opts.random ?? Math.random;
  const sleep = opts.sleep ?? defaultSleep;
  const now = opts.now ?? Date.now;
  const redact = (text: string) => text.split(apiKey).join('[redacted]');

  async function tryOnce<T>(spec: RequestSpec<T>, attempt: number): Promise<HttpResult<T>> {
    const url = base + spec.path + queryString(spec.query);
    const headers = new Headers(spec.headers);
    headers.set('authorization', `Bearer ${apiKey}`);
    headers.set('accept', `application/json, ${PROBLEM_CONTENT_TYPE}`);
    if (spec.body !== undefined) headers.set('content-type', 'application/json');
    const init: RequestInit = {
      method: spec.method,
      headers,
      body: spec.body === undefined ? undefined : JSON.stringify(spec.body),
      signal: spec.signal,
    };
    let res: Response;
    let text: string;
    try {
      res = await doFetch(url, init);
      // Read inside the try: a connection reset mid-body is a network failure too.
      text = await res.text();
    } catch (err) {
      spec.signal?.throwIfAborted();
      const code = networkCode(err);
      if (err instanceof TypeError || (code !== null && NETWORK_CODES.has(code))) {
        throw new TaskyardNetworkError(spec.method, spec.path, code, { cause: err }, base);
      }
      throw err;
    }
    spec.onResponse?.({ status: res.status, headers: res.headers, attempt });
    if (res.status >= 400) throw errorFromResponse(spec, res, redact(text));
    if (res.status < 200 || res.status > 299) {
      throw new TaskyardResponseError(spec.method, spec.path, res.status, 'not a success status');
    }
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch (err) {
      throw new TaskyardResponseError(spec.method, spec.path, res.status, 'the body is not JSON', {
        cause: err,
      });
    }
    const parsed = spec.schema.safeParse(json);
    if (!parsed.success) {
      const issues = parsed.error.issues
        .slice(0, 5)
        .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
        .join('; ');
      throw new TaskyardResponseError(
        spec.method,
        spec.path,
        res.status,
        `the body does not match the contract (${issues})`,
        { cause: parsed.error },
      );
    }
    return { status: res.status, headers: res.headers, body: parsed.data, attempts: attempt };
  }

  function errorFromResponse(
    spec: Pick<RequestSpec<unknown>, 'method' | 'path'>,
    res: Response,
    text: string,
  ): Error {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      doc = undefined;
    }
    const isProblem =
      (res.headers.get('content-type') ?? '').toLowerCase().startsWith(PROBLEM_CONTENT_TYPE) ||
      problemSlug((doc as { type?: unknown } | undefined)?.type) !== null;
    if (!isProblem || !doc || typeof doc !== 'object' || Array.isArray(doc)) {
      const snippet = text.length > 200 ? `${text.slice(0, 200)}…` : text;
      return new TaskyardResponseError(
        spec.method,
        spec.path,
        res.status,
        `an error without a problem document${snippet ? `: ${snippet}` : ''}`,
      );
    }
    const body = doc as Record<string, unknown>;
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    return new TaskyardProblemError({
      status: res.status,
      slug: problemSlug(body.type),
      title: str(body.title) ?? res.statusText,
      detail: str(body.detail) ?? '(the server gave no detail)',
      instance: str(body.instance) ?? res.headers.get('x-request-id'),
      body,
      retryAfterMs: parseRetryAfter(res.headers.get('retry-after'), now()),
      method: spec.method,
      path: spec.path,
    });
  }

  return {
    async send<T>(spec: RequestSpec<T>): Promise<HttpResult<T>> {
      const attempts = spec.retry === false ? 1 : policy.attempts;
      for (let attempt = 1; ; attempt += 1) {
        spec.signal?.throwIfAborted();
        try {
          return await tryOnce(spec, attempt);
        } catch (err) {
          if (attempt >= attempts || !isRetryable(err)) throw err;
          await sleep(retryDelayMs(attempt, policy, random, retryAfterOf(err)), spec.signal);
        }
      }
    },
  };
}

function normaliseBaseUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch (err) {
    throw new TypeError('baseUrl must be an absolute http(s) URL', { cause: err });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new TypeError(`baseUrl must be http or https, got ${u.protocol}`);
  }
  if (u.username || u.password) throw new TypeError('baseUrl must not carry credentials');
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

function queryString(query: RequestSpec<unknown>['query']): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
  const s = params.toString();
  return s ? `?${s}` : '';
}

/** `code` of the error or of its cause chain (undici wraps socket errors in `cause`). */
function networkCode(err: unknown): string | null {
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 4; depth += 1) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const inner = (e as { errors?: unknown[] }).errors;
    if (Array.isArray(inner) && inner.length > 0) {
      e = inner[0];
      continue;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return null;
}

/** A backoff wait. The timer is a deadline between tries, cancelled by the call's signal. */
const defaultSleep: Sleep = (ms, signal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
