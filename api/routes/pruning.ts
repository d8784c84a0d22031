import { Router } from 'express';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import { createPruningRunBodySchema, pruningRunView } from '../../shared/contract/pruning';
import type { DatabaseHandle } from '../../shared/db/database';
import { getPruningRun, listPruningRuns, type PruningRunRow } from '../../shared/db/pruning-store';
import type { Logger } from '../../shared/logger';
import { requestPruningRun } from '../../queues/pruning-producer';
import type { Queues } from '../../queues/producer';
import { requireScope } from '../middleware/auth';
import { idempotency } from '../middleware/idempotency';
import { getById, listNewestFirst } from '../read-handlers';
import { methodNotAllowed } from '../middleware/not-found';
import { validate, validated } from '../middleware/validate';

export interface PruningRouteDeps {
  config: Config;
  db: DatabaseHandle;
  queues: Queues;
  clock: Clock;
  logger: Logger;
  afterCommit?: () => void | Promise<void>;
}

const createSchemas = { body: createPruningRunBodySchema };

const location = (id: string) => `/v1/pruning/runs/${id}`;
const accepted = (row: PruningRunRow) => ({
  status: 202,
  body: pruningRunView(row),
  location: location(row.id),
});

/** DESIGN.md §5: POST /v1/pruning/runs (write, Idempotency-Key), GET /v1/pruning/runs/:id (read); also GET /v1/pruning/runs (read, newest first). */
export function pruningRouter(deps: PruningRouteDeps): Router {
  const router = Router();
  const db = deps.db.db;
  const keyed = idempotency({ db, config: deps.config, clock: deps.clock }, { required: true });

  router
    .route('/v1/pruning/runs')
    .post(requireScope('write'), validate(createSchemas), keyed, async (req, res) => {
      const { body } = validated(req, createSchemas);
      const { response } = await requestPruningRun(
        { db, queues: deps.queues, clock: deps.clock, logger: req.log, afterCommit: deps.afterCommit },
        { dryRun: body.dry_run ?? false, claim: req.idempotency, respond: accepted },
      );
      res.status(response.status).location(response.location!).json(response.body);
    })
    // Scheduled runs have ids nobody was told: the list is how they are found.
    .get(...listNewestFirst((o) => listPruningRuns(db, o), pruningRunView))
    .all(methodNotAllowed(['GET', 'POST']));

  router
    .route('/v1/pruning/runs/:id')
    .get(...getById('pruning run', (id) => getPruningRun(db, id), pruningRunView))
    .all(methodNotAllowed(['GET']));

  return router;
}
