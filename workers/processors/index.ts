import type { Redis } from 'ioredis';
import { noopQueue } from '../../queues/noop';
import type { DatabaseHandle } from '../../shared/db/database';
import type { Logger } from '../../shared/logger';
import { buildRegistry, type ProcessorRegistry } from '../registry';
import { createNoopProcessor } from './noop';

/** What processors need, passed in by the process entry (no module-level singletons). */
export interface ProcessorDeps {
  /** Short-command Redis connection (role `client`), owned and closed by the caller. */
  redis: Redis;
  /** Config REDIS_PREFIX. */
  prefix: string;
  db: DatabaseHandle;
  logger: Logger;
}

/**
 * Every processor, by queue and job name. A queue without processors here is not consumed
 * by the runtime; the domain queues get theirs in later changes.
 */
export function buildProcessors(deps: ProcessorDeps): ProcessorRegistry {
  return buildRegistry({
    [noopQueue.name]: { noop: createNoopProcessor(deps) },
  });
}
