import { Router } from 'express';
import type { Redis } from 'ioredis';
import type { HealthResponse, ReadinessChecks, ReadyResponse } from '../../shared/contract/health';
import type { DatabaseHandle } from '../../shared/db/database';
import { pingDatabase } from '../../shared/db/health';
import { migrationStatus, type Migration } from '../../shared/db/migrate';
import { safeErrorReason } from '../../shared/db/unavailable';
import { DependencyUnavailableError } from '../../shared/errors';
import { pingRedis } from '../../shared/redis';
import { DeadlineError, withDeadline } from '../../shared/deadline';
import { methodNotAllowed } from '../middleware/not-found';

/** Each readiness check answers within this, or counts as not ready. */
export const READINESS_DEADLINE_MS = 2_000;

/** 503 from /readyz: `checks` names what is not ready and why. */
export class NotReadyError extends DependencyUnavailableError {
  constructor(checks: ReadinessChecks) {
    const failing = Object.entries(checks)
      .filter(([, v]) => v !== 'ok')
      .map(([k]) => k);
    super(`Not ready: ${failing.join(', ')}.`, 5);
    this.extra.checks = checks;
  }
}

/**
 * A failure reason fit for an unauthenticated client: short, no credentials. Our own
 * wording (deadlines, the database ping) is written for this page. A driver's message can
 * name the host, the database or the user, so any other error shows its code only; the
 * whole error goes to the api's log.
 */
function reason(err: unknown): string {
  if (err instanceof DependencyUnavailableError || err instanceof DeadlineError) {
    const firstLine = err.message.split('\n', 1)[0] ?? '';
    // Not even a redacted URL: user, host, database and schema are nobody's business here.
    const clean = firstLine.replace(/\b([a-z][a-z0-9+.-]*):\/\/[^\s]+/gi, '($1 URL)');
    return truncate(`unavailable: ${clean}`);
  }
  return `unavailable (${safeErrorReason(err)})`;
}

function truncate(text: string, max = 300): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** Runs one check; a failure is kept in `causes` (for the log) and shown as its safe reason. */
async function check(
  name: string,
  causes: Record<string, unknown>,
  run: () => Promise<string>,
): Promise<string> {
  try {
    return await run();
  } catch (err) {
    const e = err as { message?: unknown; code?: unknown; cause?: { message?: unknown; code?: unknown } };
    causes[name] = {
      message: e?.message,
      code: e?.code,
      ...(e?.cause ? { cause: { message: e.cause.message, code: e.cause.code } } : {}),
    };
    return reason(err);
  }
}

/**
 * GET /healthz: 200 while the process runs. GET /readyz: database ping, migration status
 * (nothing pending, no integrity problems) and Redis ping, in parallel, each with a deadline;
 * 200 when all are `ok`, else 503 `dependency-unavailable` with `checks` and `Retry-After`.
 * Neither needs authentication.
 */
export function healthRouter(deps: {
  db: DatabaseHandle;
  redis: Redis;
  migrations: readonly Migration[];
}): Router {
  const router = Router();
  router
    .route('/healthz')
    .get((_req, res) => {
      const body: HealthResponse = { status: 'ok' };
      res.json(body);
    })
    .all(methodNotAllowed(['GET']));

  router
    .route('/readyz')
    .get(async (req, res) => {
      const causes: Record<string, unknown> = {};
      const [database, migrations, redis] = await Promise.all([
        check('database', causes, async () => {
          await pingDatabase(deps.db, READINESS_DEADLINE_MS);
          return 'ok';
        }),
        check('migrations', causes, async () => {
          const status = await withDeadline(
            'the migration ledger',
            READINESS_DEADLINE_MS,
            migrationStatus(deps.db, deps.migrations),
          );
          if (status.problems.length > 0)
            return truncate(`integrity problems: ${status.problems.join('; ')}`);
          if (status.pending.length > 0) return `pending: ${status.pending.join(', ')}`;
          return 'ok';
        }),
        check('redis', causes, async () => {
          await pingRedis(deps.redis, READINESS_DEADLINE_MS);
          return 'ok';
        }),
      ]);
      const checks: ReadinessChecks = { database, migrations, redis };
      if (database !== 'ok' || migrations !== 'ok' || redis !== 'ok') {
        req.log.warn({ checks, causes }, 'not ready');
        throw new NotReadyError(checks);
      }
      const body: ReadyResponse = {
        status: 'ready',
        checks: { database: 'ok', migrations: 'ok', redis: 'ok' },
      };
      res.json(body);
    })
    .all(methodNotAllowed(['GET']));
  return router;
}
