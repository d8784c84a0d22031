import { Queue, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { QueueDefinition } from './definition';
import { REDIS_DEADLINE_MS, withDeadline } from '../shared/deadline';
import { connectionErrorLogger, type Logger } from '../shared/logger';

/** BullMQ Queue handles for a set of queue definitions, sharing one client connection. */
export interface Queues {
  readonly byName: ReadonlyMap<string, Queue>;
  get(name: string): Queue;
  /**
   * Enqueue with a deterministic job id: adding the same id twice is a no-op (BullMQ).
   * @throws DeadlineError when Redis does not answer within REDIS_DEADLINE_MS.
   */
  add(queue: string, jobName: string, payload: unknown, jobId: string, opts?: JobsOptions): Promise<void>;
  close(): Promise<void>;
}

export function createQueues(
  defs: readonly QueueDefinition[],
  connection: Redis,
  prefix: string,
  logger?: Logger,
): Queues {
  const byName = new Map<string, Queue>();
  const defByName = new Map(defs.map((d) => [d.name, d]));
  for (const def of defs) {
    const queue = new Queue(def.name, { connection, prefix, defaultJobOptions: def.defaultJobOptions });
    // Without a listener BullMQ prints connection errors to the console; the owner of
    // the connection decides what an outage means (readiness, 503s).
    queue.on(
      'error',
      logger ? connectionErrorLogger(logger, 'queue connection error', { queue: def.name }) : () => undefined,
    );
    byName.set(def.name, queue);
  }
  const get = (name: string): Queue => {
    const q = byName.get(name);
    if (!q) throw new Error(`unknown queue "${name}"; known queues: ${[...byName.keys()].join(', ')}`);
    return q;
  };
  return {
    byName,
    get,
    async add(queue, jobName, payload, jobId, opts) {
      const def = defByName.get(queue);
      const schema = def?.jobs[jobName];
      if (!def || !schema) throw new Error(`queue "${queue}" has no job "${jobName}"`);
      const data = schema.parse(payload);
      // A deadline, or an enqueue while Redis is away would wait for it however long it takes;
      // a late add is harmless (the job id is deterministic, a second add is a no-op).
      await withDeadline(
        `Redis (add ${jobId} to ${queue})`,
        REDIS_DEADLINE_MS,
        get(queue).add(jobName, data, { ...opts, jobId }),
      );
    },
    async close() {
      const errors: unknown[] = [];
      for (const q of [...byName.values()].reverse()) {
        try {
          await q.close();
        } catch (err) {
          errors.push(err);
        }
      }
      if (errors.length > 0) throw new AggregateError(errors, 'closing queues failed');
    },
  };
}
