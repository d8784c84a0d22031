import { z } from 'zod';
import { canonicalJson } from '../idempotency';
import {
  simulationScenarioSchema,
  type SimulationScenario,
  type SimulationScenarioInput,
} from '../contract/simulation';
import type { HttpClient } from './http-client';
import { TaskyardProblemError } from './problem-error';
import { chooseIdempotencyKey } from './backups';

/** The api's simulation view; unknown fields pass through. */
export const simulationViewSchema = z.looseObject({
  simulation_id: z.string(),
  status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
  progress: z.number(),
  scenario: z.looseObject({ seed: z.number() }),
  result: z.unknown(),
  error: z.string().nullable(),
});
export type SimulationViewBody = z.output<typeof simulationViewSchema>;

export interface StartSimulationRequest {
  simulation_id: string;
  scenario: SimulationScenarioInput;
}

export interface SimulationsClient {
  /**
   * Start a simulation. On 409 simulation-exists it returns the existing run when its
   * scenario equals the request field by field (the seed too, when the request gives one;
   * defaults applied on both sides), and otherwise throws that 409. Retries network errors,
   * 5xx and 409 in flight with the same Idempotency-Key.
   * @throws TaskyardProblemError (slug `simulation-exists`) when the id is taken by another
   * scenario, or by a run that was pruned (`body.simulation` null, `body.pruned_at`)
   */
  startSimulation(
    req: StartSimulationRequest,
    opts?: { idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<SimulationViewBody>;
  getSimulation(id: string, opts?: { signal?: AbortSignal }): Promise<SimulationViewBody>;
  cancelSimulation(id: string, opts?: { signal?: AbortSignal }): Promise<SimulationViewBody>;
}

/**
 * Whether an existing run answers this request: every scenario field equal after defaults;
 * the seed only counts when the request chose one (otherwise the server picked it).
 */
export function sameScenario(requested: SimulationScenario, existing: unknown): boolean {
  const parsed = simulationScenarioSchema.safeParse(existing);
  if (!parsed.success) return false;
  const theirs: Record<string, unknown> = { ...parsed.data };
  const ours: Record<string, unknown> = { ...requested };
  if (ours.seed === undefined) {
    delete ours.seed;
    delete theirs.seed;
  }
  return canonicalJson(ours) === canonicalJson(theirs);
}

export function simulationsClient(http: HttpClient): SimulationsClient {
  const one = (id: string) => `/v1/simulations/${encodeURIComponent(id)}`;
  const getSimulation: SimulationsClient['getSimulation'] = async (id, opts = {}) =>
    (await http.send({ method: 'GET', path: one(id), schema: simulationViewSchema, signal: opts.signal }))
      .body;

  return {
    async startSimulation(req, opts = {}) {
      // Parse locally first: a bad scenario fails here with zod's list of problems, and
      // the comparison below sees the same defaults the server applied.
      const scenario = simulationScenarioSchema.parse(req.scenario);
      try {
        const r = await http.send({
          method: 'POST',
          path: '/v1/simulations',
          headers: { 'idempotency-key': chooseIdempotencyKey(opts.idempotencyKey) },
          body: { simulation_id: req.simulation_id, scenario: req.scenario },
          schema: simulationViewSchema,
          signal: opts.signal,
        });
        return r.body;
      } catch (err) {
        if (!(err instanceof TaskyardProblemError) || err.slug !== 'simulation-exists') throw err;
        // The run that had this id was pruned: there is nothing to compare, and the id stays taken.
        if (err.body.simulation === null) throw err;
        const existing = await getSimulation(req.simulation_id, { signal: opts.signal });
        if (sameScenario(scenario, existing.scenario)) return existing;
        throw err;
      }
    },
    getSimulation,
    async cancelSimulation(id, opts = {}) {
      const r = await http.send({
        method: 'POST',
        path: `${one(id)}/cancel`,
        body: {},
        schema: simulationViewSchema,
        signal: opts.signal,
      });
      return r.body;
    },
  };
}
