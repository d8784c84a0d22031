import { z } from 'zod';
import { defineQueue } from './definition';

/**
 * Test-only queue (TASKYARD_ENV=test): exercises the worker runtime end to end and in
 * benchmarks without any domain work. `hold_ms` keeps a job active (observing its
 * AbortSignal) so drain and crash behaviour can be tested.
 */
export const noopQueue = defineQueue({
  name: 'noop',
  testOnly: true,
  // High-volume, resource-less ticks: a completed line per job at info would be noise.
  jobLogLevel: 'debug',
  jobs: {
    noop: z.object({
      seq: z.number().int().nonnegative().optional(),
      hold_ms: z.number().int().min(0).max(600_000).optional(),
    }),
  },
  defaultJobOptions: {
    attempts: 5,
    backoff: { type: 'fixed', delay: 100 },
    removeOnComplete: { count: 100_000 },
  },
});
