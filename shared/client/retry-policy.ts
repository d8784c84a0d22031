import { TaskyardNetworkError, TaskyardProblemError, TaskyardResponseError } from './problem-error';

/** How the client retries transient failures. */
export interface RetryOptions {
  /** Total tries, the first one included. @defaultValue 5 */
  attempts?: number;
  /** Delay before the first retry, doubled for each further one. @defaultValue 200 */
  baseDelayMs?: number;
  /** Cap of the exponential delay (a server's Retry-After is honoured above it). @defaultValue 5000 */
  maxDelayMs?: number;
}

export type ResolvedRetry = Required<RetryOptions>;

export const DEFAULT_RETRY: ResolvedRetry = Object.freeze({
  attempts: 5,
  baseDelayMs: 200,
  maxDelayMs: 5000,
});

/** Fill defaults and reject values that would make the policy meaningless. */
export function resolveRetry(opts: RetryOptions = {}): ResolvedRetry {
  const r = { ...DEFAULT_RETRY, ...stripUndefined(opts) };
  if (!Number.isInteger(r.attempts) || r.attempts < 1) {
    throw new RangeError(`retry.attempts must be a whole number ≥ 1, got ${r.attempts}`);
  }
  for (const k of ['baseDelayMs', 'maxDelayMs'] as const) {
    if (!Number.isFinite(r[k]) || r[k] < 0) throw new RangeError(`retry.${k} must be ≥ 0, got ${r[k]}`);
  }
  return r;
}

function stripUndefined(o: RetryOptions): RetryOptions {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as RetryOptions;
}

/**
 * Whether a failed try may be repeated. Only failures that say nothing was decided are
 * transient: no answer at all, a 5xx (the api releases the idempotency claim on a 5xx),
 * 409 `idempotency-key-in-flight` (the first request with the key is still running) and
 * 429 `rate-limited` (refused before anything was claimed). Every other 4xx is the
 * caller's to fix and is thrown at once.
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof TaskyardNetworkError) return true;
  if (err instanceof TaskyardProblemError) {
    return (
      err.status >= 500 ||
      (err.status === 409 && err.slug === 'idempotency-key-in-flight') ||
      (err.status === 429 && err.slug === 'rate-limited')
    );
  }
  if (err instanceof TaskyardResponseError) return err.status >= 500;
  return false;
}

/**
 * Delay before retry number `retry` (1 for the first retry): exponential backoff
 * `min(maxDelayMs, baseDelayMs · 2^(retry-1))` with equal jitter (half fixed, half
 * random), so the delay keeps growing while clients that failed together spread out.
 * A server's Retry-After is a floor: the client never comes back sooner than asked.
 */
export function retryDelayMs(
  retry: number,
  policy: ResolvedRetry,
  random: () => number,
  retryAfterMs: number | null,
): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  const jittered = exp / 2 + (exp / 2) * clamp01(random());
  return Math.round(Math.max(jittered, retryAfterMs ?? 0));
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}

/** Retry-After carried by a failure, if any. */
export function retryAfterOf(err: unknown): number | null {
  return err instanceof TaskyardProblemError ? err.retryAfterMs : null;
}
