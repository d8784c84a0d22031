import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Express, Request, RequestHandler } from 'express';
import {
  DependencyUnavailableError,
  ForbiddenError,
  ProblemError,
  toError,
  ValidationFailedError,
  type ValidationIssue,
} from '../../shared/errors';
import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import type { Database } from '../../shared/db/schema';
import type { Queues } from '../../queues/producer';
import { authenticateAdminBoard } from '../middleware/auth';
import { jsonBody, refuseBadBody } from '../middleware/json-body';
import { notFound } from '../middleware/not-found';
import { validationIssues } from '../middleware/validate';
import { ALL_QUEUES } from '../../queues/registry';
import { z } from 'zod';
import { sendProblem } from '../middleware/problem';

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
  deps: {
    db: Kysely<Database>;
    queues: Queues;
    redis: Redis;
    bodyLimitBytes: number;
    /** The api's per-key rate limit, shared with the other routes. */
    rateLimit: RequestHandler;
  },
): void {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(ADMIN_BOARD_PATH);
  createBullBoard({
    queues: [...deps.queues.byName.values()].map((queue) => new BullMQAdapter(queue)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'taskyard' } },
  });
  // Whatever a board handler throws comes here instead of the board's own handler, which
  // answers 500 with the thrown message: boardProblems decides what it means.
  serverAdapter.setErrorHandler((err) => ({
    status: 500,
    body: { error: { key: 'ERRORS.INTERNAL_SERVER_ERROR' }, [THROWN]: err },
  }));
  const board = serverAdapter.getRouter() as Express;
  board.disable('x-powered-by');

  // app.use (not a Router) so Express mounts the board as a sub-app: it inherits the
  // api's settings and hands req/res back with their prototypes restored.
  app.use(
    ADMIN_BOARD_PATH,
    authenticateAdminBoard({ db: deps.db }),
    deps.rateLimit,
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
    checkAddedJobs([...deps.queues.byName.keys()]),
    boardProblems(deps.redis),
    board,
    // Paths under the board that it does not serve end here, not in the Bearer-only auth that follows.
    notFound(),
  );
}

/** The members the board's page reads to show a refusal (it shows nothing without `error`). */
const boardPage = (message: string) => ({
  extra: { error: { key: 'ERRORS.INTERNAL_SERVER_ERROR' }, message },
});

const wholeNumber = (name: string, min: number, max: number) =>
  z
    .number({ error: `${name} must be a number` })
    .int({ error: `${name} must be a whole number` })
    .min(min, { error: `${name} must be at least ${min}` })
    .max(max, { error: `${name} must be at most ${max}` });
const keepFinished = (name: string) =>
  z.union(
    [
      z.boolean(),
      wholeNumber(name, 0, 1_000_000),
      z
        .object({
          age: wholeNumber(`${name}.age`, 0, 10 * 365 * 86_400),
          count: wholeNumber(`${name}.count`, 0, 1_000_000),
        })
        .partial()
        .strict(),
    ],
    { error: `${name} must be true, false, a count, or {age (seconds), count}` },
  );

/**
 * The job options the board's "add job" may set. BullMQ checks several of them only inside
 * its Lua scripts, after the job is stored (`attempts: "abc"` was added, then failed every
 * fetch with a script error), so they are checked here, and anything else is refused by name.
 */
const boardJobOptionsSchema = z
  .object({
    jobId: z.string({ error: 'jobId must be a string' }).regex(/^(?![0-9]+$)[^:]{1,255}$/, {
      error: 'jobId must be 1-255 characters, without ":", and not only digits',
    }),
    attempts: wholeNumber('attempts', 1, 1000),
    delay: wholeNumber('delay', 0, 365 * 86_400_000),
    priority: wholeNumber('priority', 0, 2_097_152),
    lifo: z.boolean({ error: 'lifo must be true or false' }),
    backoff: z.union(
      [
        wholeNumber('backoff', 0, 86_400_000),
        z
          .object({
            type: z.enum(['fixed', 'exponential']),
            delay: wholeNumber('backoff.delay', 0, 86_400_000).optional(),
            jitter: z.number().min(0).max(1).optional(),
          })
          .strict(),
      ],
      { error: 'backoff must be a delay in ms or {type: "fixed" | "exponential", delay?, jitter?}' },
    ),
    deduplication: z
      .object({
        id: z.string({ error: 'deduplication.id must be a string' }).min(1).max(255),
        ttl: wholeNumber('deduplication.ttl', 0, 365 * 86_400_000).optional(),
        extend: z.boolean().optional(),
        replace: z.boolean().optional(),
      })
      .strict(),
    removeOnComplete: keepFinished('removeOnComplete'),
    removeOnFail: keepFinished('removeOnFail'),
  })
  .partial()
  .strict();

/**
 * `POST <board>/api/queues/:queue/add`: the job's name must be one its queue declares, its
 * data must satisfy that job's schema (the worker would fail it without retries otherwise),
 * and its options must be ones BullMQ can run. A 400 lists every problem.
 */
function checkAddedJobs(queueNames: readonly string[]): RequestHandler {
  const checks = new Map<string, (body: unknown) => ValidationIssue[]>();
  for (const name of queueNames) {
    const def = ALL_QUEUES.get(name);
    if (!def) continue;
    const jobNames = Object.keys(def.jobs) as [string, ...string[]];
    const shape = z
      .object(
        {
          name: z.enum(jobNames, { error: `name must be a job of queue ${name}: ${jobNames.join(', ')}` }),
          data: z.unknown(),
          options: boardJobOptionsSchema.optional(),
        },
        { error: 'the body must be an object {name, data, options}' },
      )
      .strict();
    checks.set(name, (body) => {
      const issues: ValidationIssue[] = [];
      const parsed = shape.safeParse(body);
      if (!parsed.success) issues.push(...validationIssues('body', parsed.error.issues));
      // The data is checked whatever else is wrong, so one answer lists every problem.
      const jobName = (body as { name?: unknown } | undefined)?.name;
      const schema =
        typeof jobName === 'string' && Object.hasOwn(def.jobs, jobName) ? def.jobs[jobName] : undefined;
      // BullMQ stores an absent payload as {}; null stays null, which the schema refuses.
      const given = (body as { data?: unknown }).data;
      const data = schema?.safeParse(given === undefined ? {} : given);
      if (data && !data.success) issues.push(...validationIssues('body.data', data.error.issues));
      return issues;
    });
  }
  return (req, _res, next) => {
    // As loose as the board's router, which ignores case and a trailing slash.
    const m = req.method === 'POST' ? /^\/api\/queues\/([^/]+)\/add\/?$/i.exec(req.path) : null;
    let check: ((body: unknown) => ValidationIssue[]) | undefined;
    try {
      check = m ? checks.get(decodeURIComponent(m[1]!)) : undefined;
    } catch {
      // Not a queue name (bad %-encoding): the board answers it as the unknown queue it is.
    }
    const issues = check?.(req.body) ?? [];
    if (issues.length > 0) {
      const detail = `The job cannot be added: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}.`;
      const err = new ValidationFailedError(issues, detail);
      // Without `error` the board's add-job dialog closes as if it worked.
      Object.assign(err.extra, boardPage(detail).extra);
      throw err;
    }
    next();
  };
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

/** Where the error handler above leaves a board handler's thrown error for boardProblems. */
const THROWN = Symbol('board handler error');

/**
 * DESIGN.md §4.7 slugs for the statuses the board refuses with. Its 405s mean "not on this
 * queue" (read-only, or a scheduler it cannot run), not a method problem with an `Allow`
 * list, so they are 403s; anything else is a 400.
 */
const BOARD_STATUS_SLUGS: Record<number, [slug: string, title: string]> = {
  400: ['validation-failed', 'Bull Board refused the request'],
  403: ['forbidden', 'Bull Board does not allow this'],
  404: ['not-found', 'Not found'],
  409: ['conflict', 'Conflict'],
};

/** A refusal of the board's API as a problem, with the board's status where it has a slug. */
class BoardRefusal extends ProblemError {
  readonly slug: string;
  readonly status: number;
  readonly title: string;
  constructor(status: number, detail: string, fields?: ConstructorParameters<typeof ProblemError>[1]) {
    super(detail, fields);
    const mapped = status === 405 ? 403 : status;
    const known = BOARD_STATUS_SLUGS[mapped];
    this.status = known ? mapped : 400;
    [this.slug, this.title] = known ?? BOARD_STATUS_SLUGS[400]!;
  }
}

/** `ERRORS.QUEUE_NOT_FOUND` → `queue not found`. */
function describeKey(key: string): string {
  return key
    .replace(/^ERRORS\./, '')
    .replace(/_/g, ' ')
    .toLowerCase();
}

/**
 * Bull Board's API answers a refusal as JSON (`error: {key, options}`, sometimes `message`,
 * `code`, `jobSchedulerId`), and a throw from one of its handlers as a 500 with the thrown
 * message. DESIGN.md §4.7 wants problem+json, and no input may cause a 500. So every answer of
 * 400 or more under `/api/` is sent as a problem with the status the board chose (400
 * validation-failed, 403 and 405 forbidden, 404 not-found, 409 conflict), every member of the
 * board's body kept beside the standard ones (its page reads them for its messages). A throw
 * is classified: Redis away → 503; a Redis reply error (a server fault, e.g. WRONGTYPE or OOM)
 * → 500 with nothing of the reply; anything else is BullMQ or the board refusing what the
 * admin asked (job options, say) → 400 quoting it.
 */
function boardProblems(redis: Redis): RequestHandler {
  return (req, res, next) => {
    if (!req.path.startsWith('/api/')) return next();
    const json = res.json.bind(res);
    // Read now: the board's routers rewrite req.path and req.baseUrl on the way in.
    const where = `${req.method} ${req.originalUrl.split('?')[0]}`;
    res.json = (body: unknown) => {
      if (res.statusCode < 400) return json(body);
      const problem = boardProblem(req, where, res.statusCode, body, redis);
      sendProblem(res, problem, req.id ?? '');
      return res;
    };
    next();
  };
}

function boardProblem(
  req: Request,
  where: string,
  status: number,
  body: unknown,
  redis: Redis,
): ProblemError {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string | symbol, unknown> & {
    error?: { key?: unknown; options?: unknown };
  };
  const thrown = b[THROWN];
  if (thrown !== undefined) {
    const err = toError(thrown);
    if (redis.status !== 'ready') {
      const detail = 'Redis is not connected; retry once it is.';
      return new DependencyUnavailableError(detail, 5, err, boardPage(detail).extra);
    }
    if (err.name === 'ReplyError') {
      if (isScriptRuntimeError(err)) {
        // BullMQ checks some options only inside its Lua scripts: a value of the wrong type
        // there is the request's doing, though Redis's wording says nothing useful about it.
        req.log?.warn({ err }, 'Bull Board action refused by a BullMQ script');
        const detail = `Bull Board could not do ${where}: BullMQ's script refused the values sent (check the job options' types).`;
        return new BoardRefusal(400, detail, boardPage(detail));
      }
      req.log?.error({ err }, 'Bull Board action failed in Redis');
      const detail = 'An internal error occurred; it has been logged with this request id.';
      return new BoardFault(detail, boardPage(detail));
    }
    req.log?.warn({ err, status }, 'Bull Board refused the request');
    const detail = `Bull Board could not do ${where}: ${err.message.slice(0, 500)}`;
    return new BoardRefusal(400, detail, boardPage(detail));
  }
  const key = typeof b.error?.key === 'string' ? b.error.key : 'ERRORS.UNKNOWN';
  const options =
    b.error?.options !== undefined && b.error.options !== null ? ` ${JSON.stringify(b.error.options)}` : '';
  const detail = `Bull Board refused ${where}: ${describeKey(key)}${options}.`;
  if (status >= 500 && redis.status !== 'ready') {
    return new DependencyUnavailableError('Redis is not connected; retry once it is.', 5);
  }
  return new BoardRefusal(status, detail, { extra: { ...b } });
}

/**
 * A Lua runtime error inside a script (`ERR user_script:249: attempt to compare number with
 * string`), as opposed to a reply about the server's state (OOM, WRONGTYPE, READONLY,
 * LOADING, BUSY, MISCONF, NOSCRIPT…), which the request could not have caused.
 */
function isScriptRuntimeError(err: Error): boolean {
  return /^ERR\b/.test(err.message) && /user_script:\d+:|Error running script/i.test(err.message);
}

/** A Redis fault under a board action: not the request's doing, so a plain 500. */
class BoardFault extends ProblemError {
  readonly slug = 'internal';
  readonly status = 500;
  readonly title = 'Internal server error';
}
