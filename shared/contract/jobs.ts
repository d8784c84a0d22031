import { z } from 'zod';

/** Path parameters of GET /v1/jobs/:queue/:jobId. */
export const jobParamsSchema = z.object({
  queue: z
    .string()
    .min(1, { error: 'must not be empty' })
    .max(255, { error: 'must be at most 255 characters' }),
  jobId: z
    .string()
    .min(1, { error: 'must not be empty' })
    .max(255, { error: 'must be at most 255 characters' }),
});
export type JobParams = z.infer<typeof jobParamsSchema>;

/** BullMQ job states as reported by `Job#getState()` (`unknown` is answered with 404). */
export const JOB_STATES = [
  'waiting',
  'waiting-children',
  'prioritized',
  'delayed',
  'active',
  'completed',
  'failed',
] as const;

const timestamp = z.iso.datetime({ offset: false });

/** GET /v1/jobs/:queue/:jobId: one BullMQ job as the api shows it. Timestamps are RFC 3339 UTC. */
export const jobResponseSchema = z.object({
  queue: z.string(),
  id: z.string(),
  name: z.string(),
  state: z.enum(JOB_STATES),
  attempts_made: z.number().int().nonnegative(),
  /** Attempts the job may take in all (BullMQ `opts.attempts`, default 1). */
  attempts_max: z.number().int().positive(),
  /** BullMQ progress: a number or whatever object the processor reported. */
  progress: z.unknown(),
  failed_reason: z.string().nullable(),
  returnvalue: z.unknown(),
  created_at: timestamp,
  processed_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  /** When a delayed job becomes due, else null. */
  delayed_until: timestamp.nullable(),
});
export type JobResponse = z.infer<typeof jobResponseSchema>;
