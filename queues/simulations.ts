import { z } from 'zod';
import { defineQueue, KEEP_FINISHED } from './definition';

export const simulationsQueue = defineQueue({
  name: 'simulations',
  jobs: {
    'run-simulation': z.object({ simulation_id: z.string().min(1).max(128) }),
  },
  // Retries resume from the last checkpoint, so they are cheap.
  defaultJobOptions: { attempts: 5, backoff: { type: 'exponential', delay: 2_000 }, ...KEEP_FINISHED },
});
