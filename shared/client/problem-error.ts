import { PROBLEM_TYPE_PREFIX } from '../contract/problem';
import { redactUrl } from '../redact-url';

/**
 * Errors the typed client throws. None of them ever carries the API key: messages are
 * built from the method, the path and what the server said, and the client refuses an
 * API key it could not send safely before any request is made.
 */

/** What a problem+json answer said, as the client received it. */
export interface ProblemErrorFields {
  status: number;
  /** `<slug>` of `type: urn:taskyard:problem:<slug>`; `null` when the type is not one of ours. */
  slug: string | null;
  title: string;
  detail: string;
  /** The request id of the failed request (also `X-Request-Id`). */
  instance: string | null;
  /** The whole problem document, including members per slug (e.g. `errors`). */
  body: Record<string, unknown>;
  /** From `Retry-After` (delta-seconds or HTTP-date), in milliseconds; `null` when absent. */
  retryAfterMs: number | null;
  method: string;
  path: string;
}

/** An RFC 9457 problem+json answer from the taskyard api (DESIGN.md §4.7). */
export class TaskyardProblemError extends Error {
  readonly status: number;
  readonly slug: string | null;
  readonly title: string;
  readonly detail: string;
  readonly instance: string | null;
  readonly body: Record<string, unknown>;
  readonly retryAfterMs: number | null;
  readonly method: string;
  readonly path: string;

  constructor(fields: ProblemErrorFields) {
    super(
      `${fields.method} ${fields.path} failed: ${fields.status} ${fields.slug ?? 'unknown-problem'}: ${fields.detail}`,
    );
    this.name = 'TaskyardProblemError';
    this.status = fields.status;
    this.slug = fields.slug;
    this.title = fields.title;
    this.detail = fields.detail;
    this.instance = fields.instance;
    this.body = fields.body;
    this.retryAfterMs = fields.retryAfterMs;
    this.method = fields.method;
    this.path = fields.path;
  }
}

/**
 * The server answered something the client cannot use: an error status without a
 * problem document (e.g. a proxy's HTML 502), or a success body that does not match the
 * contract. `status` lets the retry policy still treat a 5xx as transient.
 */
export class TaskyardResponseError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${method} ${path}: unexpected ${status} response from the taskyard api: ${reason}`, options);
    this.name = 'TaskyardResponseError';
  }
}

/** The request never got an HTTP answer (connection refused or reset, DNS, socket closed). */
export class TaskyardNetworkError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly code: string | null,
    options: { cause: unknown },
    /** The api's base URL as configured; shown without its password. */
    readonly baseUrl?: string,
  ) {
    const where = baseUrl === undefined ? '' : ` at ${redactUrl(baseUrl).replace(/\/$/, '')}`;
    super(
      `${method} ${path}: could not reach the taskyard api${where}${code ? ` (${code})` : ''}: is it running there?`,
      options,
    );
    this.name = 'TaskyardNetworkError';
  }
}

/** `urn:taskyard:problem:<slug>` → `<slug>`; anything else → null. */
export function problemSlug(type: unknown): string | null {
  if (typeof type !== 'string' || !type.startsWith(PROBLEM_TYPE_PREFIX)) return null;
  const slug = type.slice(PROBLEM_TYPE_PREFIX.length);
  return slug === '' ? null : slug;
}

/**
 * `Retry-After` as milliseconds from `nowMs`: delta-seconds (`"1"`) or an HTTP-date.
 * @returns null when absent or unreadable; never negative.
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - nowMs);
}
