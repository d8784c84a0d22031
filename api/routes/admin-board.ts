import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Express, RequestHandler } from 'express';
import { DependencyUnavailableError, ForbiddenError } from '../../shared/errors';
import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import type { Database } from '../../shared/db/schema';
import type { Queues } from '../../queues/producer';
import { authenticateAdminBoard } from '../middleware/auth';
import { jsonBody, refuseBadBody } from '../middleware/json-body';
import { notFound } from '../middleware/not-found';

/** Where the Bull Board is mounted (DESIGN.md §5). */
export const ADMIN_BOARD_PATH = '/admin/queues';

/**
 * Bull Board for every queue, behind admin authentication (Bearer, or Basic with an admin
 * key as password). Authentication runs before anything of the board, its static assets
 * included; bodies go through the api's own JSON parser, so a malformed body is a 400
 * problem rather than a board error. Changes (anything but GET/HEAD/OPTIONS) from another
 * site are refused: a browser signed in with Basic sends those credentials with any form a
 * foreign page submits, and the board's "add job" route needs no body.
 */
export function mountAdminBoard(
  app: Express,
  deps: { db: Kysely<Database>; queues: Queues; redis: Redis; bodyLimitBytes: number },
): void {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(ADMIN_BOARD_PATH);
  createBullBoard({
    queues: [...deps.queues.byName.values()].map((queue) => new BullMQAdapter(queue)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'taskyard' } },
  });
  const board = serverAdapter.getRouter() as Express;
  board.disable('x-powered-by');

  // app.use (not a Router) so Express mounts the board as a sub-app: it inherits the
  // api's settings and hands req/res back with their prototypes restored.
  app.use(
    ADMIN_BOARD_PATH,
    authenticateAdminBoard({ db: deps.db }),
    sameOriginChanges,
    // BullMQ waits without limit for a connection that has never been ready: the board's
    // API would hang. Its page and assets need no Redis and still load.
    (req, _res, next) => {
      if (req.path.startsWith('/api/') && deps.redis.status !== 'ready') {
        throw new DependencyUnavailableError('Redis is not connected; the board shows queues once it is.', 5);
      }
      next();
    },
    // The board's own auth already required the admin scope.
    jsonBody({ limitBytes: deps.bodyLimitBytes }),
    refuseBadBody,
    board,
    // Paths under the board that it does not serve end here, not in the Bearer-only auth that follows.
    notFound(),
  );
}

/**
 * CSRF defence without tokens: browsers say where a request comes from (`Sec-Fetch-Site`,
 * `Origin`); a request that says nothing (curl, scripts) is not a browser's and passes.
 */
const sameOriginChanges: RequestHandler = (req, _res, next) => {
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
  const site = req.headers['sec-fetch-site'];
  const origin = req.headers.origin;
  let foreign = site !== undefined && site !== 'same-origin' && site !== 'none';
  if (!foreign && origin !== undefined) {
    try {
      foreign = new URL(origin).host !== req.headers.host;
    } catch {
      foreign = true; // "null" (sandboxed or file pages) and anything unparseable
    }
  }
  if (foreign) {
    throw new ForbiddenError(
      'Bull Board changes must come from the board itself: this request came from another site (Origin / Sec-Fetch-Site).',
    );
  }
  next();
};
