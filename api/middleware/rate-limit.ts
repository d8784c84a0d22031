import type { Request, RequestHandler } from 'express';
import { rateLimit, type RateLimitInfo } from 'express-rate-limit';
import { RateLimitedError } from '../../shared/errors';

/** The window the limit counts in. */
const WINDOW_MS = 60_000;

/**
 * At most `perMinute` requests per API key per minute (DESIGN.md §4.7 `rate-limited` 429),
 * counted after authentication, so a key that floods the api cannot starve the others. The
 * count is per api process (express-rate-limit's memory store): it costs no Redis round trip
 * on every request, and with N api processes behind a balancer a key gets up to N × the limit.
 * Answers carry the `RateLimit` and `RateLimit-Policy` headers (IETF draft 7); a refusal is a
 * 429 problem with `Retry-After`. 0 turns the limit off.
 */
export function rateLimitPerKey(perMinute: number): RequestHandler {
  if (perMinute === 0) return (_req, _res, next) => next();
  return rateLimit({
    windowMs: WINDOW_MS,
    limit: perMinute,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    // Runs after authentication: every request here has a principal.
    keyGenerator: (req) => req.principal?.id ?? 'anonymous',
    // Its checks are about keying by IP address behind proxies, which this limiter does not do.
    validate: false,
    handler: (req, _res, next) => {
      const info = (req as Request & { rateLimit?: RateLimitInfo }).rateLimit;
      const resetAt = info?.resetTime?.getTime() ?? Date.now() + WINDOW_MS;
      const retryAfterS = Math.max(1, Math.ceil((resetAt - Date.now()) / 1000));
      next(
        new RateLimitedError(
          `This API key made more than ${perMinute} requests in a minute to this api process; retry after ${retryAfterS} s.`,
          { headers: { 'Retry-After': String(retryAfterS) }, extra: { limit_per_minute: perMinute } },
        ),
      );
    },
  });
}
