import { z } from 'zod';
import type { SimulationRow } from '../db/simulations-store';
import { listQuerySchema, rfc3339 } from './common';
import { simulationScenarioSchema, type ResolvedScenario, type SimulationResult } from './simulation';
import { simulationJobId } from './job-ids';

/** HTTP shapes of /v1/simulations (DESIGN.md §4.2, §5). The scenario itself is in ./simulation. */

/** Client-chosen, unique forever (DESIGN.md §4.2). */
export const SIMULATION_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const simulationId = z.string({ error: 'simulation_id must be a string' }).regex(SIMULATION_ID_PATTERN, {
  error: 'simulation_id must be 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit',
});

/** POST /v1/simulations body. */
export const createSimulationBodySchema = z.strictObject(
  { simulation_id: simulationId, scenario: simulationScenarioSchema },
  { error: 'the body must be a JSON object with simulation_id and scenario' },
);
export type CreateSimulationBody = z.output<typeof createSimulationBodySchema>;

export const simulationIdParamSchema = z.strictObject({ id: simulationId });

export const SIMULATION_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;

/** GET /v1/simulations query: `status`, `limit`, `cursor`. */
export const listSimulationsQuerySchema = listQuerySchema.extend({
  status: z
    .enum(SIMULATION_STATUSES, { error: `status must be one of ${SIMULATION_STATUSES.join(', ')}` })
    .optional(),
});

export const cancelSimulationBodySchema = z.preprocess((v) => v ?? {}, z.strictObject({}));

export interface SimulationView {
  simulation_id: string;
  status: SimulationRow['status'];
  /** Customers finished / customers, 0..1. */
  progress: number;
  /** The scenario as run, with the seed used. */
  scenario: ResolvedScenario;
  /** Simulated quantities only: the same scenario and seed always give the same result. */
  result: SimulationResult | null;
  error: string | null;
  attempts: number;
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  cancel_requested_at: string | null;
  /** Wall-clock compute time of the run (attempts summed up to the checkpoint each resumed from). */
  elapsed_ms: number | null;
  /** Events the engine handled (arrivals, departures, abandonments). */
  events: number | null;
  events_per_s: number | null;
  /** Its BullMQ job in queue `simulations` (GET /v1/jobs/simulations/:jobId). */
  job_id: string;
}

function parseJson<T>(text: string | null): T | null {
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

const num = (v: number | null) => (v === null ? null : Number(v));

export function simulationView(row: SimulationRow): SimulationView {
  const elapsed = num(row.elapsed_ms);
  const events = num(row.events);
  return {
    simulation_id: row.id,
    status: row.status,
    progress: Math.min(1, Math.max(0, Number(row.progress_bp) / 10_000)),
    scenario: parseJson<ResolvedScenario>(row.scenario)!,
    result: parseJson<SimulationResult>(row.result),
    error: row.error,
    attempts: Number(row.attempts),
    created_at: rfc3339(row.created_at),
    started_at: rfc3339(row.started_at),
    finished_at: rfc3339(row.finished_at),
    cancel_requested_at: rfc3339(row.cancel_requested_at),
    elapsed_ms: row.status === 'succeeded' ? elapsed : null,
    events: row.status === 'succeeded' ? events : null,
    events_per_s:
      row.status === 'succeeded' && elapsed !== null && events !== null && elapsed > 0
        ? Math.round((events * 1000) / elapsed)
        : null,
    job_id: simulationJobId(row.id),
  };
}
