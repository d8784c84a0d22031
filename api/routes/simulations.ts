import { Router } from 'express';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import { rfc3339 } from '../../shared/contract/common';
import { resolveSeed } from '../../shared/contract/simulation';
import {
  cancelSimulationBodySchema,
  createSimulationBodySchema,
  listSimulationsQuerySchema,
  simulationIdParamSchema,
  simulationView,
} from '../../shared/contract/simulations-api';
import type { DatabaseHandle } from '../../shared/db/database';
import {
  getSimulation,
  getClaimedSimulationId,
  listSimulations,
  requestSimulationCancel,
  type SimulationRow,
} from '../../shared/db/simulations-store';
import { ConflictError, NotFoundError } from '../../shared/errors';
import type { Logger } from '../../shared/logger';
import type { Queues } from '../../queues/producer';
import { requestSimulation, simulationLocation } from '../../queues/simulation-producer';
import { requireScope } from '../middleware/auth';
import { idempotency } from '../middleware/idempotency';
import { keysetPage, listName } from '../keyset-page';
import { methodNotAllowed } from '../middleware/not-found';
import { validate, validated } from '../middleware/validate';

export interface SimulationsRouteDeps {
  config: Config;
  db: DatabaseHandle;
  queues: Queues;
  clock: Clock;
  logger: Logger;
  afterCommit?: () => void | Promise<void>;
}

const createSchemas = { body: createSimulationBodySchema };
const listSchemas = { query: listSimulationsQuerySchema };
const oneSchemas = { params: simulationIdParamSchema };
const cancelSchemas = { params: simulationIdParamSchema, body: cancelSimulationBodySchema };

const accepted = (row: SimulationRow) => ({
  status: 202,
  body: simulationView(row),
  location: simulationLocation(row.id),
});

/** 404 for an id with no run; one whose run was pruned says so (its id stays taken). */
async function noSimulation(db: DatabaseHandle['db'], id: string): Promise<NotFoundError> {
  const claimed = await getClaimedSimulationId(db, id);
  if (!claimed) return new NotFoundError(`There is no simulation with simulation_id ${id}.`);
  const at = rfc3339(claimed.prunedAt);
  return new NotFoundError(
    `Simulation ${id} finished and was pruned${at ? ` on ${at}` : ''} (SIMULATION_RETENTION_DAYS); its simulation_id stays taken.`,
    { extra: { pruned_at: at } },
  );
}

/** DESIGN.md §4.2, §5: POST/GET /v1/simulations, GET /v1/simulations/:id, POST …/:id/cancel. */
export function simulationsRouter(deps: SimulationsRouteDeps): Router {
  const router = Router();
  const db = deps.db.db;
  // Optional key, checked before the claim of the simulation_id: a true retry replays its 202.
  const keyed = idempotency({ db, config: deps.config, clock: deps.clock }, { required: false });
  const producer = (logger: Logger) => ({
    db,
    queues: deps.queues,
    clock: deps.clock,
    logger,
    afterCommit: deps.afterCommit,
  });

  router
    .route('/v1/simulations')
    .post(requireScope('write'), validate(createSchemas), keyed, async (req, res) => {
      const { body } = validated(req, createSchemas);
      const { response } = await requestSimulation(producer(req.log), {
        simulationId: body.simulation_id,
        scenario: resolveSeed(body.scenario),
        createdBy: req.principal?.id ?? null,
        claim: req.idempotency,
        respond: accepted,
        present: simulationView,
      });
      res.status(response.status).location(response.location!).json(response.body);
    })
    .get(requireScope('read'), validate(listSchemas), async (req, res) => {
      const { query } = validated(req, listSchemas);
      res.json(
        await keysetPage(
          query,
          query.status === undefined ? listName(req) : `${listName(req)}?status=${query.status}`,
          (o) => listSimulations(db, { ...o, status: query.status }),
          simulationView,
        ),
      );
    })
    .all(methodNotAllowed(['GET', 'POST']));

  router
    .route('/v1/simulations/:id')
    .get(requireScope('read'), validate(oneSchemas), async (req, res) => {
      const { params } = validated(req, oneSchemas);
      const row = await getSimulation(db, params.id);
      if (!row) throw await noSimulation(db, params.id);
      res.json(simulationView(row));
    })
    .all(methodNotAllowed(['GET']));

  router
    .route('/v1/simulations/:id/cancel')
    .post(requireScope('write'), validate(cancelSchemas), keyed, async (req, res) => {
      const { params } = validated(req, cancelSchemas);
      const r = await requestSimulationCancel(db, { id: params.id, now: deps.clock.now().getTime() });
      if (r.outcome === 'missing') throw await noSimulation(db, params.id);
      if (r.outcome === 'terminal') {
        throw new ConflictError(
          `Simulation ${params.id} has already ended (${r.row.status}); only a queued or running simulation can be cancelled.`,
        );
      }
      req.log.info({ simulation_id: params.id, outcome: r.outcome }, 'simulation cancel requested');
      res.status(202).location(simulationLocation(params.id)).json(simulationView(r.row));
    })
    .all(methodNotAllowed(['POST']));

  return router;
}
