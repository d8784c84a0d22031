import type { Kysely } from 'kysely';
import type { Redis } from 'ioredis';
import type { Database } from '../shared/db/schema';
import { toError } from '../shared/errors';
import { createLifecycle, type ManagedLifecycle } from '../shared/lifecycle';
import { connectionErrorLogger, type Logger } from '../shared/logger';
import { createRedis } from '../shared/redis';
import type { Queues } from '../queues/producer';
import { maintenanceQueue } from '../queues/maintenance';
import { overdueWithoutWorker } from '../queues/unserved';
import { REDIS_DEADLINE_MS, withDeadline } from '../shared/deadline';
import {
  applySchedules,
  schedulersPresent,
  scheduleWakeKey,
  type ScheduleDefinition,
} from '../queues/schedules';

/**
 * Keeps the BullMQ job schedulers in Redis equal to the schedules in the database
 * (DESIGN.md §4.5), in every worker process: at start, when woken (PUT /v1/schedules
 * pushes to `<prefix>:schedules:wake`), and after a Redis wipe.
 *
 * A wipe leaves nothing in Redis to react to, so the loop also re-checks on its own. It
 * waits on Redis, not on an in-process timer: a BLPOP on the wake list with a timeout of
 * `checkEverySeconds` is both the change notification and the convergence bound. The check
 * is a few HGETs; applying only happens when something differs.
 *
 * With `watchMaintenance` (a worker that does not serve the maintenance queue), each round
 * also checks that some worker serves it: the outbox relay and the reconciler run there, and
 * the reconciler is what reports other unserved queues, so it cannot report its own absence.
 * A change either way is logged once by each such worker (warn; then info once a worker
 * serving it is seen again).
 */
export function createScheduleSync(deps: {
  db: Kysely<Database>;
  queues: Queues;
  redisUrl: string;
  prefix: string;
  logger: Logger;
  drainTimeoutMs: number;
  /** Config SCHEDULE_CHECK_SECONDS. */
  checkEverySeconds: number;
  /** schedulesFor(config). */
  schedules: readonly ScheduleDefinition[];
  /**
   * Watch the maintenance queue: its jobs are overdue after `overdueAfterMs`
   * (RECONCILE_AFTER_MS); `redis` is a short-command connection to the queues' Redis.
   */
  watchMaintenance?: { overdueAfterMs: number; redis: Redis };
}): ManagedLifecycle {
  const logger = deps.logger.child({ component: 'schedule-sync' });
  const wait = deps.checkEverySeconds;
  let stopping = false;
  let maintenanceUnserved = false;

  const watchMaintenance = async (watch: { overdueAfterMs: number; redis: Redis }) => {
    const queue = deps.queues.get(maintenanceQueue.name);
    try {
      await withDeadline(
        'Redis (maintenance queue workers)',
        REDIS_DEADLINE_MS,
        (async () => {
          const waiting = await overdueWithoutWorker(queue, watch.redis, Date.now() - watch.overdueAfterMs);
          if (waiting !== undefined) {
            if (!maintenanceUnserved) {
              logger.warn(
                { queue: maintenanceQueue.name, waiting },
                'no worker serves the maintenance queue: the outbox relay and the reconciler run nowhere (work whose enqueue failed waits, and queues no worker serves go unreported); start a worker without --queues, or with --queues maintenance',
              );
            }
            maintenanceUnserved = true;
            // Nothing overdue says little on its own (a scheduler re-applied at a worker's
            // start looks new): only a worker seen again ends the warning.
          } else if (maintenanceUnserved && (await queue.getWorkersCount()) > 0) {
            logger.info({ queue: maintenanceQueue.name }, 'a worker serves the maintenance queue again');
            maintenanceUnserved = false;
          }
        })(),
      );
    } catch (err) {
      // Redis away (the schedule check reports that), or a Redis that refuses CLIENT LIST.
      logger.debug({ err: toError(err) }, 'could not count the workers of the maintenance queue');
    }
  };
  let loop: Promise<void> | undefined;
  let blocking: Redis | undefined;

  const converge = async (reason: 'start' | 'change' | 'check') => {
    if (reason !== 'start' && (await schedulersPresent(deps.db, deps.queues, deps.schedules))) return;
    const applied = await applySchedules(deps.db, deps.queues, deps.schedules);
    logger.info({ reason, schedules: applied }, 'schedules applied to Redis');
    if (reason === 'check' && deps.queues.byName.has('maintenance')) {
      // Schedulers were missing without a change: Redis lost data. Reconcile now rather than
      // at the next tick, so queued resources whose jobs vanished are re-enqueued at once.
      await deps.queues.add('maintenance', 'reconcile', {}, `reconcile-after-sync-${Date.now()}`);
      logger.warn('schedulers were missing from Redis (data lost?): re-created them and started a reconcile');
    }
  };

  return createLifecycle(
    {
      name: 'schedule-sync',
      async start({ onCleanup }) {
        stopping = false;
        await converge('start');
        blocking = createRedis(deps.redisUrl, 'worker', { connectionName: `${deps.prefix}:schedule-sync` });
        blocking.on('error', connectionErrorLogger(logger, 'schedule sync connection error'));
        const conn = blocking;
        onCleanup(async () => {
          conn.disconnect();
        });
        loop = (async () => {
          while (!stopping) {
            try {
              const woke = await conn.blpop(scheduleWakeKey(deps.prefix), wait);
              if (stopping) return;
              try {
                await converge(woke ? 'change' : 'check');
              } finally {
                // Also while the database is away: converge reads it, the watch does not.
                if (deps.watchMaintenance) await watchMaintenance(deps.watchMaintenance);
              }
            } catch (err) {
              if (stopping) return;
              // The next BLPOP is the back-off: on this worker-role connection it waits out a
              // Redis reconnect too, so a failure never turns into a busy loop.
              logger.warn({ err: toError(err) }, 'schedule sync check failed; retrying after the next wait');
            }
          }
        })();
      },
      async drain() {
        stopping = true;
        // The BLPOP holds the connection; closing it ends the wait at once.
        blocking?.disconnect();
        await loop;
      },
      async forceClose() {
        stopping = true;
        blocking?.disconnect();
      },
    },
    { drainTimeoutMs: deps.drainTimeoutMs, logger },
  );
}
