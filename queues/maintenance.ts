import { z } from 'zod';
import { defineQueue } from './definition';

/**
 * Housekeeping that keeps Redis converged on the database (DESIGN.md §4.6): the outbox
 * relay and the reconciler, both under the `outbox-relay` single-runner scope and driven
 * by BullMQ job schedulers, like every other recurring work.
 */
export const maintenanceQueue = defineQueue({
  name: 'maintenance',
  lockScope: 'outbox-relay',
  // High-volume, resource-less ticks: a completed line per job at info would be noise.
  jobLogLevel: 'debug',
  jobs: {
    'relay-outbox': z.object({}).strict(),
    reconcile: z.object({}).strict(),
  },
  // Recurring and cheap: the next tick is the retry; keep little history.
  defaultJobOptions: { attempts: 1, removeOnComplete: { count: 100 }, removeOnFail: { count: 1000 } },
});
