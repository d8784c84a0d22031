import http from 'node:http';
import type { Socket } from 'node:net';
import express from 'express';
import type { Redis } from 'ioredis';
import type { Clock } from '../shared/clock';
import type { Config } from '../shared/config';
import type { DatabaseHandle } from '../shared/db/database';
import type { Migration } from '../shared/db/migrate';
import { HeaderTooLargeError, ProblemError } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { Queues } from '../queues/producer';
import { authenticate } from './middleware/auth';
import { jsonBody } from './middleware/json-body';
import { notFound } from './middleware/not-found';
import { problemHandler, rawProblemResponse } from './middleware/problem';
import { rateLimitPerKey } from './middleware/rate-limit';
import { requestContext } from './middleware/request-id';
import { mountAdminBoard } from './routes/admin-board';
import { backupsRouter } from './routes/backups';
import { pruningRouter } from './routes/pruning';
import { probesRouter } from './routes/probes';
import { providersRouter } from './routes/providers';
import { simulationsRouter } from './routes/simulations';
import { healthRouter } from './routes/health';
import { schedulesRouter } from './routes/schedules';
import { jobsRouter } from './routes/jobs';

/** Everything the api needs, passed in (no module singletons): tests build isolated instances. */
export interface AppDeps {
  config: Config;
  db: DatabaseHandle;
  redis: Redis;
  queues: Queues;
  logger: Logger;
  clock: Clock;
  migrations: readonly Migration[];
  /** Fault point between a resource's commit and its enqueue; no-op unless a test injects one. */
  afterCommit?: () => void | Promise<void>;
}

/**
 * The Express app, without listening. Order (DESIGN.md §3): request id + access log →
 * /healthz, /readyz (no auth) → Bull Board (its own admin auth, then the rate limit) → auth →
 * rate limit → JSON body → routes → 404 → one problem+json error middleware.
 */
export function buildApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // Behind a proxy, set this explicitly; trusting X-Forwarded-* by default lets clients spoof their address.
  app.set('trust proxy', false);
  app.disable('etag');

  // One limiter for the board and the rest: a key's requests count together wherever they go.
  const rateLimit = rateLimitPerKey(deps.config.RATE_LIMIT_PER_MINUTE);
  app.use(requestContext({ logger: deps.logger, clock: deps.clock }));
  app.use(healthRouter({ db: deps.db, redis: deps.redis, migrations: deps.migrations }));
  mountAdminBoard(app, {
    db: deps.db.db,
    queues: deps.queues,
    redis: deps.redis,
    bodyLimitBytes: deps.config.BODY_LIMIT_BYTES,
    rateLimit,
  });
  app.use(authenticate({ db: deps.db.db }));
  app.use(rateLimit);
  app.use(jsonBody({ limitBytes: deps.config.BODY_LIMIT_BYTES }));
  app.use(jobsRouter({ queues: deps.queues }));
  app.use(backupsRouter(deps));
  app.use(pruningRouter(deps));
  app.use(providersRouter(deps), probesRouter(deps));
  app.use(simulationsRouter(deps));
  app.use(schedulesRouter(deps));
  app.use(notFound());
  app.use(problemHandler(deps.logger));
  return app;
}

/** Largest request head (request line + headers) the server reads; larger → 431. */
export const MAX_HEADER_BYTES = 16 * 1024;

class RequestTimeoutError extends ProblemError {
  readonly slug = 'validation-failed';
  readonly status = 408;
  readonly title = 'Request not received in time';
}

class MalformedRequestError extends ProblemError {
  readonly slug = 'validation-failed';
  readonly status = 400;
  readonly title = 'Malformed HTTP request';
}

/** Errors Node raises before Express sees a request, by code, as the problem to answer. */
const CLIENT_ERRORS: Record<
  string,
  { error: (server: { requestTimeoutMs: number }) => ProblemError; statusText: string }
> = {
  HPE_HEADER_OVERFLOW: {
    error: () => new HeaderTooLargeError(`The request line and headers exceed ${MAX_HEADER_BYTES} bytes.`),
    statusText: 'Request Header Fields Too Large',
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    error: ({ requestTimeoutMs }) =>
      new RequestTimeoutError(
        `The request was not received in full within ${requestTimeoutMs} ms; send the whole request (head and body) at once.`,
      ),
    statusText: 'Request Timeout',
  },
};

/**
 * An HTTP server for the app: `maxHeaderSize` 16 KiB; a request (head and body) not received
 * in full within `requestTimeoutMs` gets 408, so a client that stops sending mid-body does not
 * hold its connection for Node's default 5 minutes; and errors Node raises before Express
 * sees a request (header overflow, a malformed request, that timeout) answered as
 * problem+json instead of a bare status line.
 */
export function createHttpServer(
  app: express.Express,
  logger: Logger,
  opts: { requestTimeoutMs?: number } = {},
): http.Server {
  const requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
  const server = http.createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      requestTimeout: requestTimeoutMs,
      headersTimeout: requestTimeoutMs,
      // How often Node looks for requests past their timeout (default 30 s, coarser than the timeout).
      connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs),
    },
    app,
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const pending = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || pending?.headersSent) {
      socket.destroy();
      return;
    }
    const known = err.code === undefined ? undefined : CLIENT_ERRORS[err.code];
    const response = known
      ? rawProblemResponse(known.error({ requestTimeoutMs }), known.statusText)
      : rawProblemResponse(new MalformedRequestError('The request is not valid HTTP/1.1.'), 'Bad Request');
    logger.debug({ code: err.code }, 'refused a request before it reached the app');
    socket.end(response);
    // The server allows half-open sockets: a client that never closes its side would keep
    // this one, and an unfinished request on it would hold up the api's shutdown.
    socket.destroySoon();
  });
  return server;
}
