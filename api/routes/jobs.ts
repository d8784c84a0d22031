import { Router } from 'express';
import { REDIS_DEADLINE_MS, withDeadline } from '../../shared/deadline';
import type { Job } from 'bullmq';
import { JOB_STATES, jobParamsSchema, type JobResponse } from '../../shared/contract/jobs';
import { DependencyUnavailableError, NotFoundError } from '../../shared/errors';
import type { Queues } from '../../queues/producer';
import { requireScope } from '../middleware/auth';
import { methodNotAllowed } from '../middleware/not-found';
import { validate, validated } from '../middleware/validate';

const schemas = { params: jobParamsSchema };

type KnownState = (typeof JOB_STATES)[number];
const KNOWN_STATES: ReadonlySet<string> = new Set(JOB_STATES);

const rfc3339 = (ms: number | undefined | null): string | null =>
  typeof ms === 'number' && ms > 0 ? new Date(ms).toISOString() : null;

/** The api's view of a BullMQ job (shared/contract/jobs.ts). */
export function jobView(queue: string, job: Job, state: KnownState): JobResponse {
  return {
    queue,
    id: job.id ?? '',
    name: job.name,
    state,
    attempts_made: job.attemptsMade,
    attempts_max: job.opts.attempts ?? 1,
    progress: job.progress,
    failed_reason: job.failedReason ? job.failedReason : null,
    returnvalue: job.returnvalue ?? null,
    created_at: new Date(job.timestamp).toISOString(),
    processed_at: rfc3339(job.processedOn),
    finished_at: rfc3339(job.finishedOn),
    delayed_until: state === 'delayed' ? rfc3339(job.timestamp + (job.delay ?? 0)) : null,
  };
}

/** GET /v1/jobs/:queue/:jobId (scope read): one BullMQ job's state, attempts, progress and failure. */
export function jobsRouter(deps: { queues: Queues }): Router {
  const router = Router();
  const known = () => [...deps.queues.byName.keys()];
  router
    .route('/v1/jobs/:queue/:jobId')
    .get(requireScope('read'), validate(schemas), async (req, res) => {
      const { params } = validated(req, schemas);
      const queue = deps.queues.byName.get(params.queue);
      if (!queue) {
        throw new NotFoundError(
          `There is no queue named "${params.queue}"; known queues: ${known().join(', ')}.`,
          {
            extra: { known_queues: known() },
          },
        );
      }
      let found: { job: Job; state: string } | undefined;
      try {
        found = await withDeadline(
          'Redis',
          REDIS_DEADLINE_MS,
          queue
            .getJob(params.jobId)
            .then(async (job) => (job ? { job, state: await job.getState() } : undefined)),
        );
      } catch (err) {
        // An id that names one of BullMQ's own keys (`wait`, `events`, `id`, `<job>:logs`, …)
        // reads a key of another type: no such job, not an outage.
        if (!(err instanceof Error && err.message.startsWith('WRONGTYPE'))) {
          throw new DependencyUnavailableError('The job store (Redis) did not answer; retry later.', 5, err);
        }
      }
      // A job removed between the two reads reports `unknown`: gone, as far as the client can tell.
      if (!found || !KNOWN_STATES.has(found.state)) {
        throw new NotFoundError(
          `Queue "${params.queue}" has no job "${params.jobId}" (finished jobs are kept for a while, then removed).`,
        );
      }
      res.json(jobView(params.queue, found.job, found.state as KnownState));
    })
    .all(methodNotAllowed(['GET']));
  return router;
}
