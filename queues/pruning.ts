import { z } from 'zod';
import { defineQueue, KEEP_FINISHED } from './definition';

export const pruningQueue = defineQueue({
  name: 'pruning',
  lockScope: 'pruning',
  jobs: {
    prune: z.object({ run_id: z.string().min(1).max(64).optional(), dry_run: z.boolean().default(false) }),
  },
  defaultJobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 10_000 }, ...KEEP_FINISHED },
});
