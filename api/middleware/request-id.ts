import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Clock } from '../../shared/clock';
import type { Logger } from '../../shared/logger';
import type { Principal } from '../../shared/types';

declare global {
  // Express's own extension point for request members (declaration merging).
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Request id: the client's X-Request-Id when well-formed, else a UUID. Also the problem `instance`. */
      id: string;
      /** The request's logger (carries request_id); use it for every log line of the request. */
      log: Logger;
      /** Set by the auth middleware. */
      principal?: Principal;
      /**
       * Why the body was refused (415, 413, malformed JSON, unstorable text), kept by jsonBody
       * and thrown by requireScope once the scope is known to be right: a caller without the
       * scope gets its 403, not a lesson in body limits.
       */
      bodyError?: unknown;
      /** Parsed params/query/body, set by the validate middleware. */
      valid?: { params?: unknown; query?: unknown; body?: unknown };
    }
  }
}

/** A client-supplied request id is accepted only in this shape (no header or log injection). */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

/** Longest path written to the access log; the rest is cut (a path can be ~16 KiB). */
const MAX_LOGGED_PATH = 512;

/**
 * First middleware: give the request an id (echoed in `X-Request-Id`), a child logger
 * with `request_id`, and one access log line when the response finishes or the client
 * goes away. The query string is never logged (it may carry secrets).
 */
export function requestContext(deps: { logger: Logger; clock: Clock }): RequestHandler {
  return (req, res, next) => {
    const started = deps.clock.monotonic();
    const offered = req.headers['x-request-id'];
    const id = typeof offered === 'string' && REQUEST_ID_PATTERN.test(offered) ? offered : randomUUID();
    req.id = id;
    req.log = deps.logger.child({ request_id: id });
    res.setHeader('X-Request-Id', id);

    let logged = false;
    const accessLog = () => {
      if (logged) return;
      logged = true;
      const raw = req.originalUrl.split('?', 1)[0] ?? '';
      const path = raw.length > MAX_LOGGED_PATH ? `${raw.slice(0, MAX_LOGGED_PATH)}…` : raw;
      req.log.info(
        {
          method: req.method,
          path,
          status: res.statusCode,
          duration_ms: Math.round((deps.clock.monotonic() - started) * 100) / 100,
          ...(res.writableFinished ? {} : { aborted: true }),
        },
        'request',
      );
    };
    res.once('finish', accessLog);
    res.once('close', accessLog);
    next();
  };
}
