import { loadMigrations } from '../../migrations/index';
import { systemClock } from '../../shared/clock';
import { createLocks } from '../../shared/locks';
import { createRedis } from '../../shared/redis';
import type { QueueDefinition } from '../../queues/definition';
import { buildProcessors } from '../../workers/processors/index';
import { createWorkerRuntime } from '../../workers/runtime';
import type { ApiUnderTest } from '../integration/api.harness';

/**
 * A worker runtime in-process next to an api from `startApi`: same config, Redis prefix,
 * database and logger, real processors. `stop()` drains it and closes its connection.
 */
export async function startInProcessWorker(
  api: ApiUnderTest,
  queues: readonly QueueDefinition[],
): Promise<{ stop(): Promise<void> }> {
  const redis = createRedis(api.config.REDIS_URL, 'client');
  const runtime = createWorkerRuntime({
    config: api.config,
    logger: api.logger,
    queues: [...queues],
    registry: buildProcessors({
      redis,
      prefix: api.prefix,
      db: api.db,
      logger: api.logger,
      config: api.config,
      clock: systemClock,
      migrations: await loadMigrations(),
      locks: createLocks({ redis, prefix: api.prefix, logger: api.logger, ttlMs: api.config.LOCK_TTL_MS }),
      queues: api.queues,
    }),
  });
  await runtime.start();
  return {
    async stop() {
      try {
        await runtime.stop();
      } finally {
        await redis.quit().catch(() => redis.disconnect());
      }
    },
  };
}
