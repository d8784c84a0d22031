import { z } from 'zod';
import { defineQueue, KEEP_FINISHED } from './definition';

export const backupsQueue = defineQueue({
  name: 'backups',
  lockScope: 'backups',
  jobs: {
    // Scheduled runs carry no id: the job scheduler's data is the same every tick, so the
    // processor derives the backup id from the job id (one row per tick, even on retry).
    'create-backup': z.object({
      backup_id: z.string().min(1).max(64).optional(),
      trigger: z.enum(['manual', 'scheduled']),
    }),
    'verify-backup': z.object({
      backup_id: z.string().min(1).max(64),
      verification_id: z.string().min(1).max(64),
    }),
  },
  defaultJobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 5_000 }, ...KEEP_FINISHED },
});
