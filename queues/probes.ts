import { z } from 'zod';
import { defineQueue, KEEP_FINISHED } from './definition';

export const probesQueue = defineQueue({
  name: 'probes',
  lockScope: 'probes',
  jobs: {
    'probe-cycle': z.object({ run_id: z.string().min(1).max(64).optional() }),
  },
  // No retries: the next cycle is the retry.
  defaultJobOptions: { attempts: 1, ...KEEP_FINISHED },
});
