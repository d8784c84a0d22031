import type { JobsOptions } from 'bullmq';
import type { z } from 'zod';

/**
 * A queue as declared once and shared by producers (api, relay) and consumers (workers):
 * its name, the jobs it carries with their payload schemas, and default job options.
 */
export interface QueueDefinition<Jobs extends Record<string, z.ZodType> = Record<string, z.ZodType>> {
  readonly name: string;
  readonly jobs: Jobs;
  readonly defaultJobOptions: JobsOptions;
  /** Scope of the single-runner lock the queue's jobs take, if any (DESIGN.md §6). */
  readonly lockScope?: string;
  /** Queues only enabled when TASKYARD_ENV=test. */
  readonly testOnly?: boolean;
  /**
   * Level of the per-job `job completed` line. Failures are always logged at info.
   * @defaultValue 'info'
   */
  readonly jobLogLevel?: 'info' | 'debug';
}

export function defineQueue<Jobs extends Record<string, z.ZodType>>(
  def: QueueDefinition<Jobs>,
): QueueDefinition<Jobs> {
  return Object.freeze({ ...def, jobs: Object.freeze({ ...def.jobs }) });
}

/** How long finished jobs are kept for inspection in Bull Board. */
export const KEEP_FINISHED = {
  removeOnComplete: { age: 24 * 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
} as const;
