import type { AddressInfo } from 'node:net';
import { loadMigrations } from '../migrations/index';
import { systemClock } from '../shared/clock';
import { EXIT_CONFIG, loadConfig, type Config } from '../shared/config';
import { countActiveAdminKeys, ensureAdminKey, generateApiKey } from '../shared/db/api-keys';
import { createDatabase, type DatabaseHandle } from '../shared/db/database';
import { migrateToLatest } from '../shared/db/migrate';
import { ConfigError } from '../shared/errors';
import { connectionErrorLogger, createLogger, redactUrl, type Logger } from '../shared/logger';
import { createRedis } from '../shared/redis';
import { handleShutdownSignals } from '../shared/signals';
import { enabledQueues } from '../queues/registry';
import { createQueues } from '../queues/producer';
import { buildApp, createHttpServer } from './app';

/**
 * The api process (`npm run api`): configuration, database (migrated), bootstrap admin key,
 * Redis and queue producers, then HTTP. SIGTERM/SIGINT stop intake, let in-flight requests
 * finish (bounded by DRAIN_TIMEOUT_MS) and close everything in reverse order; a second
 * signal exits at once. Exit codes: 0 clean stop, 1 failed start or stop, 78 bad configuration.
 */

/**
 * TASKYARD_ADMIN_KEY registers that key. In development with no configured key and no active
 * admin key, one is generated and printed once to stderr: the only place a key is ever shown.
 */
async function bootstrapAdminKey(config: Config, handle: DatabaseHandle, logger: Logger): Promise<void> {
  const now = systemClock.now().getTime();
  if (config.TASKYARD_ADMIN_KEY !== undefined) {
    const { created, revoked } = await ensureAdminKey(handle.db, config.TASKYARD_ADMIN_KEY, now);
    if (revoked) {
      logger.warn(
        'TASKYARD_ADMIN_KEY was revoked and grants nothing: set another TASKYARD_ADMIN_KEY, or create an admin key with `npm run taskyard -- keys create --name admin --scopes admin`',
      );
      return;
    }
    logger.info(
      { created },
      created ? 'admin key registered from TASKYARD_ADMIN_KEY' : 'admin key already registered',
    );
    return;
  }
  if ((await countActiveAdminKeys(handle.db)) > 0) return;
  if (config.TASKYARD_ENV !== 'development') {
    // Outside development no key is made up: say that nothing can use the admin routes yet.
    logger.warn(
      'no active admin key exists, so nothing can use the admin routes (providers, schedule changes, downloads, the board): set TASKYARD_ADMIN_KEY, or create one with `npm run taskyard -- keys create --name admin --scopes admin`',
    );
    return;
  }
  const key = generateApiKey();
  await ensureAdminKey(handle.db, key, now);
  logger.info('generated a development admin key (printed once to stderr)');
  process.stderr.write(`\nadmin key (shown once): ${key}\n\n`);
}

async function main(): Promise<number> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return EXIT_CONFIG;
    }
    throw err;
  }
  const logger = createLogger({ level: config.LOG_LEVEL, name: 'api' });
  // A stray rejection (e.g. a late result after a deadline) is logged; it never ends the process.
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
  // Cleanups in start order; run in reverse on stop.
  const cleanups: Array<{ what: string; run: () => Promise<unknown> }> = [];
  const closeAll = async (): Promise<boolean> => {
    let ok = true;
    for (const { what, run } of cleanups.reverse()) {
      try {
        await run();
      } catch (err) {
        ok = false;
        logger.error({ err, what }, 'cleanup failed');
      }
    }
    cleanups.length = 0;
    return ok;
  };

  try {
    const db = await createDatabase(config.DATABASE_URL, { logger });
    cleanups.push({ what: 'database', run: () => db.close() });
    const migrations = await loadMigrations();
    await migrateToLatest(db, migrations, logger);
    await bootstrapAdminKey(config, db, logger);

    // Named like the worker's connections, so CLIENT LIST tells whose connection is whose.
    const redis = createRedis(config.REDIS_URL, 'client', { connectionName: `${config.REDIS_PREFIX}:api` });
    // ioredis reports connection trouble as events; unobserved they would crash the process.
    redis.on('error', connectionErrorLogger(logger, 'redis connection error'));
    cleanups.push({ what: 'redis', run: () => redis.quit() });
    const queues = createQueues(enabledQueues(config), redis, config.REDIS_PREFIX, logger);
    cleanups.push({ what: 'queues', run: () => queues.close() });

    const app = buildApp({
      config,
      db,
      redis,
      queues,
      logger,
      clock: systemClock,
      migrations,
      afterCommit: crashDrill(config, logger),
    });
    const server = createHttpServer(app, logger, { requestTimeoutMs: config.HTTP_REQUEST_TIMEOUT_MS });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.PORT, config.HOST, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    logger.info(
      {
        url: `http://${host}:${address.port}`,
        port: address.port,
        db: db.displayUrl,
        redis: redactUrl(config.REDIS_URL),
      },
      'api listening',
    );
    // Under `npm start` the supervisor learns the real address here (PORT=0, or a port some
    // other server already answers on), instead of polling HOST:PORT and finding another server.
    if (process.send) {
      process.send({ type: 'api-listening', url: `http://${host}:${address.port}` });
      process.channel?.unref();
    }

    const stopped = new Promise<number>((resolveStop) => {
      handleShutdownSignals({
        logger,
        onFirst: async () => {
          let drained = true;
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            // close(): no new connections; idle keep-alive sockets close, in-flight requests finish.
            server.close(() => resolve());
            server.closeIdleConnections();
            timer = setTimeout(() => {
              drained = false;
              logger.warn(
                { drain_timeout_ms: config.DRAIN_TIMEOUT_MS },
                'drain timed out: closing connections',
              );
              server.closeAllConnections();
              resolve();
            }, config.DRAIN_TIMEOUT_MS);
          });
          clearTimeout(timer);
          const ok = await closeAll();
          logger.info({ drained }, 'api stopped');
          const code = ok && drained ? 0 : 1;
          resolveStop(code);
          return code;
        },
      });
    });
    return await stopped;
  } catch (err) {
    logger.fatal({ err }, 'api failed to start');
    await closeAll();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      // Restarting cannot help: the address is the configuration's problem (EX_CONFIG).
      process.stderr.write(
        `api: cannot listen on ${config.HOST}:${config.PORT} (${code}); set PORT/HOST to a free address\n`,
      );
      return EXIT_CONFIG;
    }
    return 1;
  }
}

/**
 * Crash drill (TASKYARD_ENV=test only): TASKYARD_FAULT=exit-after-commit makes the process die
 * between a resource's commit and its enqueue, the window the outbox relay exists for.
 */
function crashDrill(config: Config, logger: Logger): (() => void) | undefined {
  if (config.TASKYARD_ENV !== 'test' || config.TASKYARD_FAULT !== 'exit-after-commit') return undefined;
  logger.warn('crash drill armed: the api exits after the next commit, before enqueueing');
  return () => {
    logger.warn('crash drill: exiting between commit and enqueue');
    process.exit(86);
  };
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`api crashed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
