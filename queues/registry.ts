import type { Config } from '../shared/config';
import { backupsQueue } from './backups';
import { maintenanceQueue } from './maintenance';
import type { QueueDefinition } from './definition';
import { noopQueue } from './noop';
import { probesQueue } from './probes';
import { pruningQueue } from './pruning';
import { simulationsQueue } from './simulations';

/** Every queue taskyard knows, by name. Immutable: an unknown name fails fast. */
export const ALL_QUEUES: ReadonlyMap<string, QueueDefinition> = new Map<string, QueueDefinition>(
  [backupsQueue, simulationsQueue, pruningQueue, probesQueue, maintenanceQueue, noopQueue].map((q) => [
    q.name,
    q,
  ]),
);

/** The queues this environment runs: test-only queues exist only when TASKYARD_ENV=test. */
export function enabledQueues(config: Pick<Config, 'TASKYARD_ENV'>): QueueDefinition[] {
  return [...ALL_QUEUES.values()].filter((q) => !q.testOnly || config.TASKYARD_ENV === 'test');
}

/** Resolve `--queues a,b` against the enabled queues. @throws Error naming the known queues. */
export function selectQueues(
  config: Pick<Config, 'TASKYARD_ENV'>,
  names: readonly string[] | 'all',
): QueueDefinition[] {
  const enabled = enabledQueues(config);
  if (names === 'all') return enabled;
  const byName = new Map(enabled.map((q) => [q.name, q]));
  const unknown = names.filter((n) => !byName.has(n));
  if (unknown.length > 0) {
    throw new Error(
      `unknown queue(s): ${unknown.join(', ')}; known queues: ${[...byName.keys()].join(', ')}`,
    );
  }
  return [...new Set(names)].map((n) => byName.get(n)!);
}
