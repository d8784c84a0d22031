import { z } from 'zod';

/**
 * Capacity-planning simulations: what a client asks (scenario) and what the engine
 * answers (result). Every time in a result is simulated time in milliseconds; no result
 * field holds wall-clock time, so a scenario and a seed always give the same result.
 *
 * Glossary:
 * - customer: one client request; it arrives, maybe waits in the line, is served by one
 *   of the servers, and leaves. It can instead be dropped (line full on arrival) or
 *   abandon (it gave up after waiting patience_ms).
 * - wait: time from arrival to the start of service; sojourn: wait + service time.
 * - warmup: the first customers, run but left out of every statistic, so the figures
 *   describe the steady state rather than the empty system at time 0.
 */

/** Upper bound on customers in one run. */
export const MAX_CUSTOMERS = 50_000_000;
/** Upper bound on servers. */
export const MAX_SERVERS = 1024;
/** Upper bound on queue_capacity: the waiting line is held in memory and in checkpoints. */
export const MAX_QUEUE_CAPACITY = 1_000_000;
/** Default coefficient of variation of lognormal service times. */
export const DEFAULT_LOGNORMAL_CV = 1;

const finite = (what: string) =>
  z
    .number({ error: `${what} must be a number` })
    .refine(Number.isFinite, { error: `${what} must be finite` });

const count = (what: string, min: number, max: number) =>
  z
    .number({ error: `${what} must be a number` })
    .int({ error: `${what} must be an integer` })
    .min(min, { error: `${what} must be at least ${min}` })
    .max(max, { error: `${what} must be at most ${max}` });

const arrivalSchema = z.strictObject({
  /** poisson: exponential gaps; constant: exactly 1/rate apart. */
  process: z.enum(['poisson', 'constant']),
  /** Mean arrivals per simulated second, 1e-6 to 1e6. */
  rate_per_s: finite('rate_per_s')
    .min(1e-6, { error: 'rate_per_s must be at least 1e-6' })
    .max(1e6, { error: 'rate_per_s must be at most 1e6' }),
});

const meanMs = finite('mean_ms')
  .min(1e-6, { error: 'mean_ms must be at least 1e-6' })
  .max(1e7, { error: 'mean_ms must be at most 1e7' });

/**
 * Service time distribution. `cv` (coefficient of variation: standard deviation / mean)
 * belongs to lognormal only, 0.01 to 10, default 1; exponential has cv 1 and constant 0
 * by definition, so `cv` on them is rejected as an unknown field.
 */
const serviceSchema = z.discriminatedUnion('distribution', [
  z.strictObject({ distribution: z.literal('exponential'), mean_ms: meanMs }),
  z.strictObject({ distribution: z.literal('constant'), mean_ms: meanMs }),
  z.strictObject({
    distribution: z.literal('lognormal'),
    mean_ms: meanMs,
    cv: finite('cv')
      .min(0.01, { error: 'cv must be at least 0.01' })
      .max(10, { error: 'cv must be at most 10' })
      .default(DEFAULT_LOGNORMAL_CV),
  }),
]);

const scenarioShape = {
  arrival: arrivalSchema,
  service: serviceSchema,
  /** Servers working in parallel, 1 to 1024. */
  servers: count('servers', 1, MAX_SERVERS),
  /** Customers to simulate (warmup included), 1 to 50,000,000. */
  customers: count('customers', 1, MAX_CUSTOMERS),
  /**
   * Places in the waiting line, 0 to 1,000,000 (0: no line, a loss system). Arrivals that
   * find it full are dropped. Absent: unlimited.
   */
  queue_capacity: count('queue_capacity', 0, MAX_QUEUE_CAPACITY).optional(),
  /** A waiting customer gives up after this many ms (1e-6 to 1e10). Absent: never. */
  patience_ms: finite('patience_ms')
    .min(1e-6, { error: 'patience_ms must be at least 1e-6' })
    .max(1e10, { error: 'patience_ms must be at most 1e10' })
    .optional(),
  /** First customers left out of the statistics; fewer than `customers`. Default 0. */
  warmup_customers: count('warmup_customers', 0, MAX_CUSTOMERS - 1).optional(),
  /** PRNG seed (uint32). Absent: chosen at random when the simulation is accepted, and stored. */
  seed: count('seed', 0, 0xffffffff).optional(),
};

type ScenarioLike = { customers?: unknown; warmup_customers?: unknown };

const warmupBelowCustomers = (s: ScenarioLike) =>
  typeof s.warmup_customers !== 'number' ||
  typeof s.customers !== 'number' ||
  s.warmup_customers < s.customers;

const warmupCheck = {
  error: 'warmup_customers must be less than customers',
  path: ['warmup_customers'],
  // Run even when other fields failed, so one parse lists every problem.
  when: (payload: { value: unknown }) => {
    const v = payload.value as ScenarioLike | null;
    return typeof v === 'object' && v !== null && typeof v.customers === 'number';
  },
};

/** A scenario as a client sends it (POST /v1/simulations `scenario`). */
export const simulationScenarioSchema = z
  .strictObject(scenarioShape)
  .refine(warmupBelowCustomers, warmupCheck);
export type SimulationScenarioInput = z.input<typeof simulationScenarioSchema>;
export type SimulationScenario = z.output<typeof simulationScenarioSchema>;

/** A scenario with its seed fixed: what the engine runs and what is stored. */
export const resolvedScenarioSchema = z
  .strictObject({ ...scenarioShape, seed: count('seed', 0, 0xffffffff) })
  .refine(warmupBelowCustomers, warmupCheck);
export type ResolvedScenario = z.output<typeof resolvedScenarioSchema>;

/** A fresh uint32 seed from the platform's cryptographic random source. */
export function randomSeed(): number {
  return globalThis.crypto.getRandomValues(new Uint32Array(1))[0]!;
}

/** The scenario with its seed: the given one, or a fresh random one when absent. */
export function resolveSeed(scenario: SimulationScenario, seed: () => number = randomSeed): ResolvedScenario {
  return { ...scenario, seed: scenario.seed ?? seed() };
}

const summarySchema = z.object({
  /** Customers the figures are over (served after warmup). */
  count: z.number().int().nonnegative(),
  mean: z.number(),
  p50: z.number(),
  p90: z.number(),
  p95: z.number(),
  p99: z.number(),
  max: z.number(),
});

/** Simulated result. Times are simulated ms; rates per simulated second. */
export const simulationResultSchema = z.object({
  /** Every customer, warmup included: customers = served + dropped + abandoned. */
  customers: z.number().int(),
  served: z.number().int(),
  dropped: z.number().int(),
  abandoned: z.number().int(),
  /** The same counts for the customers after warmup. */
  measured: z.object({
    customers: z.number().int(),
    served: z.number().int(),
    dropped: z.number().int(),
    abandoned: z.number().int(),
  }),
  /**
   * The measurement window: from the arrival of the first measured customer to the
   * departure of the last customer. Time averages below are over this window.
   */
  window_ms: z.number(),
  /** Simulated time at the end of the run (the first arrival process starts at 0). */
  end_ms: z.number(),
  /** Mean fraction of servers busy over the window. */
  utilization: z.number(),
  /** Departures per simulated second over the window. */
  throughput_per_s: z.number(),
  /** Time-average number of customers waiting (not in service) over the window. */
  mean_queue_length: z.number(),
  /** Time-average number of customers in the system (waiting + in service). */
  mean_in_system: z.number(),
  /** Measured served customers that waited (wait > 0), as a fraction of measured served. */
  probability_of_wait: z.number(),
  /** Measured dropped / measured customers. */
  probability_of_drop: z.number(),
  /** Measured abandoned / measured customers. */
  probability_of_abandon: z.number(),
  /** Waits of measured served customers (abandoned ones are not in it). */
  wait_ms: summarySchema,
  /** Wait + service time of measured served customers. */
  sojourn_ms: summarySchema,
  /**
   * Waits of measured served customers per bucket: counts[0] = waits of exactly 0;
   * counts[i] = waits in (edges_ms[i-1], edges_ms[i]]; the last count = waits > the last edge.
   */
  wait_histogram: z.object({ edges_ms: z.array(z.number()), counts: z.array(z.number().int()) }),
  /**
   * Erlang C beside the simulation, for Poisson arrivals, exponential service, no
   * queue_capacity, no patience_ms and offered load below the server count; else null.
   */
  erlang_c: z
    .object({
      probability_of_wait: z.number(),
      mean_wait_ms: z.number(),
      simulated_probability_of_wait: z.number(),
      simulated_mean_wait_ms: z.number(),
    })
    .nullable(),
});
export type SimulationResult = z.infer<typeof simulationResultSchema>;
