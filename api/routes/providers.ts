import { Router } from 'express';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import { uuidParamSchema } from '../../shared/contract/common';
import {
  createProviderBodySchema,
  HEALTH_RECENT_SAMPLES,
  patchProviderBodySchema,
  providerConfigFromBody,
  providerHealthView,
  providerPatchFromBody,
  providerView,
} from '../../shared/contract/providers';
import type { DatabaseHandle } from '../../shared/db/database';
import {
  deleteProviderWithHistory,
  getProvider,
  insertProvider,
  listProviders,
  listRecentSamples,
  updateProviderConfig,
} from '../../shared/db/providers-store';
import { ConflictError, NotFoundError } from '../../shared/errors';
import { requireScope } from '../middleware/auth';
import { idempotency } from '../middleware/idempotency';
import { getById, listNewestFirst } from '../read-handlers';
import { methodNotAllowed } from '../middleware/not-found';
import { validate, validated } from '../middleware/validate';

export interface ProvidersRouteDeps {
  config: Config;
  db: DatabaseHandle;
  clock: Clock;
}

const createSchemas = { body: createProviderBodySchema };
const oneSchemas = { params: uuidParamSchema };
const patchSchemas = { params: uuidParamSchema, body: patchProviderBodySchema };

const location = (id: string) => `/v1/providers/${id}`;
const nameTaken = (name: string) =>
  new ConflictError(`A provider named "${name}" exists; provider names are unique.`);
const missing = (id: string) => new NotFoundError(`There is no provider with id ${id}.`);

/**
 * Probe targets (issue 5): POST/GET /v1/providers, GET/PATCH/DELETE /v1/providers/:id
 * (writes need admin), GET /v1/providers/:id/health (read).
 */
export function providersRouter(deps: ProvidersRouteDeps): Router {
  const router = Router();
  const db = deps.db.db;
  // Optional: names are unique anyway, but a keyed retry gets the first answer (201) back.
  const keyed = idempotency({ db, config: deps.config, clock: deps.clock }, { required: false });
  const now = () => deps.clock.now().getTime();

  router
    .route('/v1/providers')
    .post(requireScope('admin'), validate(createSchemas), keyed, async (req, res) => {
      const { body } = validated(req, createSchemas);
      const r = await insertProvider(db, { ...providerConfigFromBody(body), now: now() });
      if (r.outcome === 'name-taken') throw nameTaken(body.name);
      req.log.info({ provider_id: r.row.id, name: r.row.name }, 'provider created');
      res.status(201).location(location(r.row.id)).json(providerView(r.row));
    })
    .get(...listNewestFirst((o) => listProviders(db, o), providerView))
    .all(methodNotAllowed(['GET', 'POST']));

  router
    .route('/v1/providers/:id')
    .get(...getById('provider', (id) => getProvider(db, id), providerView))
    .patch(requireScope('admin'), validate(patchSchemas), async (req, res) => {
      const { params, body } = validated(req, patchSchemas);
      const r = await updateProviderConfig(db, params.id, providerPatchFromBody(body), now());
      if (r.outcome === 'missing') throw missing(params.id);
      if (r.outcome === 'name-taken') throw nameTaken(body.name ?? '');
      req.log.info({ provider_id: params.id, changed: Object.keys(body) }, 'provider changed');
      res.json(providerView(r.row));
    })
    .delete(requireScope('admin'), validate(oneSchemas), async (req, res) => {
      const { params } = validated(req, oneSchemas);
      if (!(await deleteProviderWithHistory(db, params.id))) throw missing(params.id);
      req.log.info({ provider_id: params.id }, 'provider deleted with its samples and transitions');
      res.status(204).end();
    })
    .all(methodNotAllowed(['GET', 'PATCH', 'DELETE']));

  router
    .route('/v1/providers/:id/health')
    .get(requireScope('read'), validate(oneSchemas), async (req, res) => {
      const { params } = validated(req, oneSchemas);
      const row = await getProvider(db, params.id);
      if (!row) throw missing(params.id);
      res.json(providerHealthView(row, await listRecentSamples(db, row.id, HEALTH_RECENT_SAMPLES)));
    })
    .all(methodNotAllowed(['GET']));

  return router;
}
