import type { Redis } from 'ioredis';
import { noopQueue } from '../../queues/noop';
import type { DatabaseHandle } from '../../shared/db/database';
import type { Logger } from '../../shared/logger';
import { buildRegistry, type ProcessorRegistry } from '../registry';
import { createNoopProcessor } from './noop';
import { createBackupProcessors } from './backups';
import { createMaintenanceProcessors } from './maintenance';
import { maintenanceQueue } from '../../queues/maintenance';
import type { Queues } from '../../queues/producer';
import { backupsQueue } from '../../queues/backups';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import type { Migration } from '../../shared/db/migrate';
import type { Locks } from '../../shared/locks';

/** What processors need, passed in by the process entry (no module-level singletons). */
export interface ProcessorDeps {
  /** Short-command Redis connection (role `client`), owned and closed by the caller. */
  redis: Redis;
  /** Config REDIS_PREFIX. */
  prefix: string;
  db: DatabaseHandle;
  logger: Logger;
  config: Config;
  clock: Clock;
  migrations: readonly Migration[];
  locks: Locks;
  /** Producer handles for every enabled queue (the relay and reconciler enqueue). */
  queues: Queues;
}

/**
 * Every processor, by queue and job name. A queue without processors here is not consumed
 * by the runtime (simulations, pruning and probes get theirs with their features).
 */
export function buildProcessors(deps: ProcessorDeps): ProcessorRegistry {
  return buildRegistry({
    [noopQueue.name]: { noop: createNoopProcessor(deps) },
    [backupsQueue.name]: createBackupProcessors({ ...deps, databaseUrl: deps.config.DATABASE_URL }),
    [maintenanceQueue.name]: createMaintenanceProcessors(deps),
  });
}
