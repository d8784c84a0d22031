import { Router } from 'express';
import { REDIS_DEADLINE_MS, withDeadline } from '../../shared/deadline';
import { z } from 'zod';
import type { Clock } from '../../shared/clock';
import type { DatabaseHandle } from '../../shared/db/database';
import { DependencyUnavailableError, NotFoundError } from '../../shared/errors';
import type { Queues } from '../../queues/producer';
import {
  applySchedule,
  changedSchedule,
  EDITABLE_SCHEDULES,
  scheduleDefinition,
  scheduleSpecSchema,
  SCHEDULES,
  storeSchedule,
  wantedSchedule,
  type ScheduleDefinition,
  type ScheduleSpec,
} from '../../queues/schedules';
import { requireScope } from '../middleware/auth';
import { methodNotAllowed } from '../middleware/not-found';
import { validate, validated } from '../middleware/validate';

const nameSchemas = { params: z.object({ name: z.string().max(64) }).strict() };
const putSchemas = { params: nameSchemas.params, body: scheduleSpecSchema };

async function view(def: ScheduleDefinition, spec: ScheduleSpec, queues: Queues) {
  const queue = queues.byName.get(def.queue);
  const scheduler =
    queue && (await withDeadline('Redis', REDIS_DEADLINE_MS, queue.getJobScheduler(def.name)));
  return describe(def, spec, scheduler);
}

function describe(def: ScheduleDefinition, spec: ScheduleSpec, scheduler: { next?: number } | undefined) {
  return {
    name: def.name,
    queue: def.queue,
    job: def.jobName,
    editable: def.editable,
    enabled: spec.enabled,
    every_ms: spec.every_ms ?? null,
    cron: spec.cron ?? null,
    next_run_at: scheduler?.next ? new Date(scheduler.next).toISOString() : null,
    // Wanted (database) and actual (Redis) can differ for a moment after a Redis wipe.
    in_redis: scheduler !== undefined,
  };
}

/** GET /v1/schedules (read), PUT /v1/schedules/:name (admin). DESIGN.md §4.5. */
export function schedulesRouter(deps: { db: DatabaseHandle; queues: Queues; clock: Clock }): Router {
  const router = Router();
  const db = deps.db.db;
  const editable = (name: string) => {
    const def = scheduleDefinition(name);
    if (!def || !def.editable) {
      throw new NotFoundError(
        `There is no schedule named "${name}"; schedules: ${EDITABLE_SCHEDULES.join(', ')}.`,
        {
          extra: { schedules: EDITABLE_SCHEDULES },
        },
      );
    }
    return def;
  };
  const redisRead = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw new DependencyUnavailableError('Redis did not answer; retry later.', 5, err);
    }
  };

  router
    .route('/v1/schedules')
    .get(requireScope('read'), async (_req, res) => {
      const items = [];
      for (const def of SCHEDULES.filter((s) => s.editable)) {
        const spec = await wantedSchedule(db, def);
        items.push(await redisRead(() => view(def, spec, deps.queues)));
      }
      res.json({ items });
    })
    .all(methodNotAllowed(['GET']));

  router
    .route('/v1/schedules/:name')
    .get(requireScope('read'), validate(nameSchemas), async (req, res) => {
      const def = editable(validated(req, nameSchemas).params.name);
      res.json(await redisRead(async () => view(def, await wantedSchedule(db, def), deps.queues)));
    })
    .put(requireScope('admin'), validate(putSchemas), async (req, res) => {
      const { params, body } = validated(req, putSchemas);
      const def = editable(params.name);
      const spec = changedSchedule(await wantedSchedule(db, def), body);
      // The database is the truth; Redis follows. If applying fails, the schedule sync in
      // every worker converges on the stored value.
      await storeSchedule(db, def.name, spec, deps.clock.now().getTime());
      req.log.info({ schedule: def.name, ...spec }, 'schedule changed');
      try {
        await withDeadline('Redis', REDIS_DEADLINE_MS, applySchedule(deps.queues, def, spec));
        res.json(await view(def, spec, deps.queues));
      } catch (err) {
        // The change is stored, so it is not a failure: in_redis false says Redis has yet to follow.
        req.log.warn({ err, schedule: def.name }, 'schedule stored; Redis will follow via the schedule sync');
        res.json(describe(def, spec, undefined));
      }
    })
    .all(methodNotAllowed(['GET', 'PUT']));

  return router;
}
