/**
 * Domain errors. Every error that can reach an HTTP client is a `ProblemError` carrying
 * its RFC 9457 slug and status; the problem middleware turns it into problem+json.
 * Control-flow errors (lock lost, stale fence, unrestartable) are typed so retry
 * behaviour is visible at the throw site.
 */

export interface ProblemFields {
  /** Extra members of the problem document (e.g. `errors` for validation). */
  extra?: Record<string, unknown>;
  /** Response headers the problem needs (e.g. Retry-After, WWW-Authenticate). */
  headers?: Record<string, string>;
  cause?: unknown;
}

export abstract class ProblemError extends Error {
  abstract readonly slug: string;
  abstract readonly status: number;
  abstract readonly title: string;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;
  constructor(detail: string, fields: ProblemFields = {}) {
    super(detail, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = new.target.name;
    this.extra = fields.extra ?? {};
    this.headers = fields.headers ?? {};
  }
}

export interface ValidationIssue {
  /** Where: `body.label`, `query.limit`, `header.idempotency-key`. */
  path: string;
  message: string;
}

export class ValidationFailedError extends ProblemError {
  readonly slug = 'validation-failed';
  readonly status = 400;
  readonly title = 'Request validation failed';
  constructor(
    readonly errors: ValidationIssue[],
    detail = `The request has ${errors.length} problem${errors.length === 1 ? '' : 's'}; see errors.`,
  ) {
    super(detail, { extra: { errors } });
  }
}

export class MalformedJsonError extends ProblemError {
  readonly slug = 'validation-failed';
  readonly status = 400;
  readonly title = 'Malformed JSON body';
}

export class UnauthorizedError extends ProblemError {
  readonly slug = 'unauthorized';
  readonly status = 401;
  readonly title = 'Authentication required';
  constructor(detail: string, realm = 'taskyard') {
    super(detail, { headers: { 'WWW-Authenticate': `Bearer realm="${realm}"` } });
  }
}

export class ForbiddenError extends ProblemError {
  readonly slug = 'forbidden';
  readonly status = 403;
  readonly title = 'Insufficient scope';
}

export class NotFoundError extends ProblemError {
  readonly slug = 'not-found';
  readonly status = 404;
  readonly title = 'Not found';
}

export class MethodNotAllowedError extends ProblemError {
  readonly slug = 'method-not-allowed';
  readonly status = 405;
  readonly title = 'Method not allowed';
  constructor(detail: string, allowed: string[]) {
    super(detail, { headers: { Allow: allowed.join(', ') }, extra: { allowed } });
  }
}

export class ConflictError extends ProblemError {
  readonly slug = 'conflict';
  readonly status = 409;
  readonly title = 'Conflict';
}

export class PayloadTooLargeError extends ProblemError {
  readonly slug = 'payload-too-large';
  readonly status = 413;
  readonly title = 'Payload too large';
}

export class UnsupportedMediaTypeError extends ProblemError {
  readonly slug = 'unsupported-media-type';
  readonly status = 415;
  readonly title = 'Unsupported media type';
}

export class RateLimitedError extends ProblemError {
  readonly slug = 'rate-limited';
  readonly status = 429;
  readonly title = 'Too many requests';
}

export class HeaderTooLargeError extends ProblemError {
  readonly slug = 'validation-failed';
  readonly status = 431;
  readonly title = 'Request header fields too large';
}

export class InternalError extends ProblemError {
  readonly slug = 'internal';
  readonly status = 500;
  readonly title = 'Internal server error';
}

export class DependencyUnavailableError extends ProblemError {
  readonly slug = 'dependency-unavailable';
  readonly status = 503;
  readonly title = 'A dependency is unavailable';
  constructor(detail: string, retryAfterSeconds = 5, cause?: unknown, extra?: Record<string, unknown>) {
    super(detail, {
      headers: { 'Retry-After': String(retryAfterSeconds) },
      cause,
      ...(extra ? { extra } : {}),
    });
  }
}

/** A component whose stop() timed out cannot be started again (DESIGN.md §4.4). HTTP 409 family. */
export class UnrestartableError extends ProblemError {
  readonly slug = 'conflict';
  readonly status = 409;
  readonly title = 'Component cannot be restarted';
}

/** The single-runner lock was lost while work ran; the job fails and is retried. */
export class LockLostError extends Error {
  constructor(
    readonly scope: string,
    options?: { cause?: unknown },
  ) {
    super(`lock for scope "${scope}" was lost`, options);
    this.name = 'LockLostError';
  }
}

/** The lock scope is held by someone else and the caller chose not to wait. */
export class LockBusyError extends Error {
  constructor(
    readonly scope: string,
    options?: { cause?: unknown },
  ) {
    super(`scope "${scope}" is held by another runner`, options);
    this.name = 'LockBusyError';
  }
}

/** A write was refused because a newer fencing token exists for the scope. */
export class StaleFenceError extends Error {
  constructor(
    readonly scope: string,
    readonly token: number,
  ) {
    super(`fencing token ${token} for scope "${scope}" is stale: a newer holder exists`);
    this.name = 'StaleFenceError';
  }
}

/** Configuration problems, all of them, listed at once. Entry points exit 78 (EX_CONFIG). */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** An applied migration's source changed, or the database is newer than the code. */
export class MigrationIntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MigrationIntegrityError';
  }
}

/** A job whose name no processor is registered for: the job fails, the worker lives on. */
export class UnknownJobError extends Error {
  constructor(
    readonly queue: string,
    readonly jobName: string,
    readonly known: readonly string[],
  ) {
    super(
      `queue "${queue}" has no processor for job "${jobName}"; known jobs: ${known.join(', ') || '(none)'}`,
    );
    this.name = 'UnknownJobError';
  }
}

/** Turn anything thrown into an Error without rewriting its message. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : 'non-error thrown', { cause: value });
}

export class IdempotencyKeyMissingError extends ProblemError {
  readonly slug = 'idempotency-key-missing';
  readonly status = 400;
  readonly title = 'Idempotency-Key header required';
}

export class IdempotencyKeyInvalidError extends ProblemError {
  readonly slug = 'idempotency-key-invalid';
  readonly status = 400;
  readonly title = 'Idempotency-Key header invalid';
}

export class IdempotencyKeyInFlightError extends ProblemError {
  readonly slug = 'idempotency-key-in-flight';
  readonly status = 409;
  readonly title = 'A request with this Idempotency-Key is in progress';
  constructor(detail: string, retryAfterSeconds = 1) {
    super(detail, { headers: { 'Retry-After': String(retryAfterSeconds) } });
  }
}

export class IdempotencyKeyMismatchError extends ProblemError {
  readonly slug = 'idempotency-key-mismatch';
  readonly status = 422;
  readonly title = 'Idempotency-Key reused for a different request';
}

/**
 * A simulation with this simulation_id exists (DESIGN.md §4.2); the body carries it. An id
 * whose run retention pruning deleted stays taken: `simulation` is null, `pruned_at` says
 * when, and there is no Location.
 */
export class SimulationExistsError extends ProblemError {
  readonly slug = 'simulation-exists';
  readonly status = 409;
  readonly title = 'A simulation with this simulation_id exists';
  constructor(
    detail: string,
    existing: { simulation: unknown; location: string } | { prunedAt: string | null },
  ) {
    super(
      detail,
      'prunedAt' in existing
        ? { extra: { simulation: null, pruned_at: existing.prunedAt } }
        : { extra: { simulation: existing.simulation }, headers: { Location: existing.location } },
    );
  }
}
