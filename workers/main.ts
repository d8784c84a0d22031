/**
 * Worker process entry: `node --import tsx workers/main.ts [--queues a,b]`.
 *
 * Exit codes: 0 clean drain, 1 unexpected error, 64 bad arguments, 70 drain timeout (jobs
 * returned to their queues), 78 invalid configuration, 130 a second shutdown signal.
 * Only this file calls process.exit.
 */
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { loadMigrations } from '../migrations/index';
import { enabledQueues, selectQueues } from '../queues/registry';
import { EXIT_CONFIG, loadConfig, type Config } from '../shared/config';
import { createDatabase, type DatabaseHandle } from '../shared/db/database';
import { migrateToLatest } from '../shared/db/migrate';
import { ConfigError } from '../shared/errors';
import { DrainTimeoutError } from '../shared/lifecycle';
import { createLogger } from '../shared/logger';
import { createRedis } from '../shared/redis';
import { withDeadline } from '../shared/deadline';
import { handleShutdownSignals } from '../shared/signals';
import { buildProcessors } from './processors/index';
import { createWorkerRuntime } from './runtime';
import { systemClock } from '../shared/clock';
import { createLocks } from '../shared/locks';
import { createQueues, type Queues } from '../queues/producer';
import { maintenanceQueue } from '../queues/maintenance';
import { createScheduleSync } from './schedule-sync';
import { schedulesFor } from '../queues/schedules';

/** sysexits EX_USAGE. */
const EXIT_USAGE = 64;
/** sysexits EX_SOFTWARE: the drain timed out; unfinished jobs went back to their queues. */
const EXIT_DRAIN_TIMEOUT = 70;
/** How long closing the queues and connections may take at exit. */
const CLOSE_GRACE_MS = 5_000;

const USAGE = `Usage: taskyard worker [--queues <name,name,...>]

Runs BullMQ workers for the given queues (default: every enabled queue).
Configuration comes from the environment (see README: REDIS_URL, DATABASE_URL, DRAIN_TIMEOUT_MS, ...).

Options:
  --queues <list>  comma-separated queue names to consume
  -h, --help       show this help
`;

function fail(message: string, code: number): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

function parseCommandLine(argv: string[]): { queues: string[] | 'all' } {
  let values: { queues?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { queues: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    fail(`${(err as Error).message}\n\n${USAGE}`, EXIT_USAGE);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (values.queues === undefined) return { queues: 'all' };
  const names = values.queues
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) fail(`--queues needs at least one queue name\n\n${USAGE}`, EXIT_USAGE);
  return { queues: names };
}

function readConfig(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }
}

async function main(): Promise<void> {
  const args = parseCommandLine(process.argv.slice(2));
  const config = readConfig();
  let queues;
  try {
    queues = selectQueues(config, args.queues);
  } catch (err) {
    fail((err as Error).message, EXIT_USAGE);
  }
  const logger = createLogger({ level: config.LOG_LEVEL, name: 'worker' });

  const exitOnCrash = (what: string) => (err: unknown) => {
    logger.fatal({ err }, what);
    process.exit(1);
  };
  process.on('uncaughtException', exitOnCrash('uncaught exception'));
  process.on('unhandledRejection', exitOnCrash('unhandled promise rejection'));

  let db: DatabaseHandle | undefined;
  let redis: Redis | undefined;
  let producers: Queues | undefined;
  const closeResources = async () => {
    const closing = (async () => {
      await producers?.close().catch((err: unknown) => logger.error({ err }, 'closing queues failed'));
      await Promise.allSettled([
        redis?.quit().catch(() => redis?.disconnect()),
        db?.close().catch((err: unknown) => logger.error({ err }, 'closing the database failed')),
      ]);
    })();
    // With Redis away, closing the queues waits for a connection that may never come back:
    // the process exits anyway, after a bounded wait.
    await withDeadline('closing connections', CLOSE_GRACE_MS, closing).catch(() => {
      logger.error({ grace_ms: CLOSE_GRACE_MS }, 'closing connections did not finish in time: dropping them');
      redis?.disconnect();
    });
  };

  try {
    db = await createDatabase(config.DATABASE_URL, { logger });
    const migrations = await loadMigrations();
    await migrateToLatest(db, migrations, logger);
    redis = createRedis(config.REDIS_URL, 'client', {
      connectionName: `${config.REDIS_PREFIX}:worker-processors`,
    });
    // Producer handles for every queue: the relay, the reconciler and the schedule sync
    // enqueue into queues this process may not consume.
    producers = createQueues(enabledQueues(config), redis, config.REDIS_PREFIX, logger);
    const locks = createLocks({ redis, prefix: config.REDIS_PREFIX, logger, ttlMs: config.LOCK_TTL_MS });
    const runtime = createWorkerRuntime({
      config,
      logger,
      queues,
      registry: buildProcessors({
        redis,
        prefix: config.REDIS_PREFIX,
        db,
        logger,
        config,
        clock: systemClock,
        migrations,
        locks,
        queues: producers,
      }),
    });
    const scheduleSync = createScheduleSync({
      db: db.db,
      queues: producers,
      redisUrl: config.REDIS_URL,
      prefix: config.REDIS_PREFIX,
      logger,
      drainTimeoutMs: config.DRAIN_TIMEOUT_MS,
      checkEverySeconds: config.SCHEDULE_CHECK_SECONDS,
      schedules: schedulesFor(config),
      // Only a worker that does not serve the maintenance queue can notice that none does.
      ...(runtime.queueNames.includes(maintenanceQueue.name)
        ? {}
        : { watchMaintenance: { overdueAfterMs: config.RECONCILE_AFTER_MS, redis } }),
    });
    if (runtime.queueNames.length === 0 && args.queues !== 'all') {
      logger.error(
        { requested: queues.map((q) => q.name), enabled: enabledQueues(config).map((q) => q.name) },
        'none of the requested queues has processors in this worker',
      );
      await closeResources();
      process.exit(EXIT_USAGE);
    }

    handleShutdownSignals({
      logger,
      onFirst: async () => {
        let code = 0;
        // Reverse order of start: the schedule sync started last.
        await scheduleSync.stop().catch((err: unknown) => logger.error({ err }, 'schedule sync stop failed'));
        try {
          await runtime.stop();
          logger.info('worker stopped: all active jobs drained');
        } catch (err) {
          if (err instanceof DrainTimeoutError) {
            logger.error(
              { err },
              'worker stopped after the drain timeout: unfinished jobs returned to their queues',
            );
            code = EXIT_DRAIN_TIMEOUT;
          } else {
            logger.error({ err }, 'worker stop failed');
            code = 1;
          }
        }
        await closeResources();
        return code;
      },
    });

    await runtime.start();
    await scheduleSync.start();
    logger.info({ queues: runtime.queueNames }, 'worker ready');
  } catch (err) {
    logger.fatal({ err }, 'worker failed to start');
    await closeResources();
    process.exit(1);
  }
}

void main().catch((err: unknown) => {
  process.stderr.write(`worker crashed: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
