import { Router } from 'express';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import { createProbeRunBodySchema, probeRunView } from '../../shared/contract/providers';
import type { DatabaseHandle } from '../../shared/db/database';
import { getProbeRun, listProbeRuns, type ProbeRunRow } from '../../shared/db/probe-runs-store';
import type { Logger } from '../../shared/logger';
import { requestProbeRun } from '../../queues/probe-producer';
import type { Queues } from '../../queues/producer';
import { requireScope } from '../middleware/auth';
import { idempotency } from '../middleware/idempotency';
import { getById, listNewestFirst } from '../read-handlers';
import { methodNotAllowed } from '../middleware/not-found';
import { validate, validated } from '../middleware/validate';

export interface ProbesRouteDeps {
  config: Config;
  db: DatabaseHandle;
  queues: Queues;
  clock: Clock;
  logger: Logger;
  afterCommit?: () => void | Promise<void>;
}

const createSchemas = { body: createProbeRunBodySchema };

const location = (id: string) => `/v1/probes/runs/${id}`;
const accepted = (row: ProbeRunRow) => ({ status: 202, body: probeRunView(row), location: location(row.id) });

/** POST /v1/probes/runs (write, Idempotency-Key): a probe cycle now. GET /v1/probes/runs (read, newest first) and /v1/probes/runs/:id (read). */
export function probesRouter(deps: ProbesRouteDeps): Router {
  const router = Router();
  const db = deps.db.db;
  const keyed = idempotency({ db, config: deps.config, clock: deps.clock }, { required: true });

  router
    .route('/v1/probes/runs')
    .post(requireScope('write'), validate(createSchemas), keyed, async (req, res) => {
      validated(req, createSchemas);
      const { response } = await requestProbeRun(
        { db, queues: deps.queues, clock: deps.clock, logger: req.log, afterCommit: deps.afterCommit },
        { claim: req.idempotency, respond: accepted },
      );
      res.status(response.status).location(response.location!).json(response.body);
    })
    // Scheduled runs have ids nobody was told: the list is how they are found.
    .get(...listNewestFirst((o) => listProbeRuns(db, o), probeRunView))
    .all(methodNotAllowed(['GET', 'POST']));

  router
    .route('/v1/probes/runs/:id')
    .get(...getById('probe run', (id) => getProbeRun(db, id), probeRunView))
    .all(methodNotAllowed(['GET']));

  return router;
}
