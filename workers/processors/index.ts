import type { Redis } from 'ioredis';
import { noopQueue } from '../../queues/noop';
import type { DatabaseHandle } from '../../shared/db/database';
import type { Logger } from '../../shared/logger';
import { buildRegistry, type ProcessorRegistry } from '../registry';
import { createNoopProcessor } from './noop';
import { createBackupProcessors } from './backups';
import { createPruningProcessors } from './pruning';
import { pruningQueue } from '../../queues/pruning';
import { createProbeProcessors } from './probes';
import { probesQueue } from '../../queues/probes';
import { createSimulationProcessors } from './simulations';
import { simulationsQueue } from '../../queues/simulations';
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

/** Every processor, by queue and job name; the runtime consumes the queues it is given. */
export function buildProcessors(deps: ProcessorDeps): ProcessorRegistry {
  return buildRegistry({
    [noopQueue.name]: { noop: createNoopProcessor(deps) },
    [backupsQueue.name]: createBackupProcessors({ ...deps, databaseUrl: deps.config.DATABASE_URL }),
    [maintenanceQueue.name]: createMaintenanceProcessors(deps),
    [pruningQueue.name]: createPruningProcessors(deps),
    [probesQueue.name]: createProbeProcessors(deps),
    [simulationsQueue.name]: createSimulationProcessors({
      ...deps,
      checkpointEveryMs: deps.config.SIMULATION_CHECKPOINT_EVERY_MS,
    }),
  });
}
