import type { ResolvedScenario } from '../../shared/contract/simulation';
import type { RngState } from './rng';
import type { HistogramState } from './stats';

/** JSON-serialisable state of an engine between two steps. */
export interface EngineCheckpoint {
  version: 1;
  scenario: ResolvedScenario;
  events: number;
  arrived: number;
  finished: number;
  /** Time of the next arrival; null once every customer has arrived. */
  next_arrival: number | null;
  arrival_rng: RngState;
  service_rng: RngState;
  /** Second normal deviate of the last Box–Muller pair, not used yet (lognormal service). */
  normal_spare: number | null;
  /** Departure times of the busy servers, in heap order. */
  departures: number[];
  queue: {
    length: number;
    /** Unlimited line: where the head of the line is in the replayed arrival stream. */
    trail: { rng: RngState; time: number; index: number } | null;
    /** Bounded line: arrival times from the head, as little-endian float64, base64. */
    times_base64: string | null;
    /** Bounded line: how many at its head are warmup customers. */
    unmeasured: number;
  };
  now: number;
  measuring: boolean;
  window_start: number;
  last_change: number;
  queue_area: number;
  busy_area: number;
  window_departures: number;
  served: number;
  dropped: number;
  abandoned: number;
  measured_dropped: number;
  measured_abandoned: number;
  wait: HistogramState;
  sojourn: HistogramState;
  wait_buckets: number[];
}

/** Thrown when a checkpoint does not belong to the scenario or is malformed. */
export class CheckpointMismatchError extends Error {
  override readonly name = 'CheckpointMismatchError';
}

/** Whether two scenarios are the same, whatever their key order. */
export function sameScenario(a: ResolvedScenario, b: ResolvedScenario): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

/** JSON with object keys sorted, to compare scenarios whatever their key order. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v,
  );
}
