import { describe, expect, it } from 'vitest';
import type { ResolvedScenario, SimulationResult } from '../../shared/contract/simulation';
import { createEngine } from '../../workers/simulation/engine';
import { erlangB } from '../../workers/simulation/erlang-c';

function run(scenario: ResolvedScenario): SimulationResult {
  const engine = createEngine(scenario);
  while (!engine.step(1_000_000).done);
  return engine.result();
}

/** Poisson arrivals, exponential service with mean 1 s, utilisation rho on c servers. */
function mmc(
  c: number,
  rho: number,
  customers: number,
  extra: Partial<ResolvedScenario> = {},
): ResolvedScenario {
  return {
    arrival: { process: 'poisson', rate_per_s: rho * c },
    service: { distribution: 'exponential', mean_ms: 1000 },
    servers: c,
    customers,
    warmup_customers: Math.floor(customers / 10),
    seed: 20240601,
    ...extra,
  };
}

const relativeError = (got: number, want: number) => Math.abs(got / want - 1);

describe('simulation accuracy against queueing theory', () => {
  it.each([
    [2, 0.5],
    [2, 0.9],
    [8, 0.7],
    [32, 0.9],
  ])(
    'M/M/%i at utilisation %f over 10 M customers: mean wait within 3 % of Erlang C, Little within 1 %',
    (c, rho) => {
      const r = run(mmc(c, rho, 10_000_000));
      const erlang = r.erlang_c!;
      expect(erlang).not.toBeNull();
      expect(erlang.simulated_mean_wait_ms).toBe(r.wait_ms.mean);
      expect(relativeError(r.wait_ms.mean, erlang.mean_wait_ms)).toBeLessThan(0.03);
      expect(relativeError(erlang.simulated_probability_of_wait, erlang.probability_of_wait)).toBeLessThan(
        0.03,
      );
      expect(relativeError(r.utilization, rho)).toBeLessThan(0.01);
      // Little's law for the line and for the whole system (throughput is per second, waits in ms).
      const perMs = r.throughput_per_s / 1000;
      expect(relativeError(r.mean_queue_length, perMs * r.wait_ms.mean)).toBeLessThan(0.01);
      expect(relativeError(r.mean_in_system, perMs * r.sojourn_ms.mean)).toBeLessThan(0.01);
      expect(r.measured).toEqual({ customers: 9_000_000, served: 9_000_000, dropped: 0, abandoned: 0 });
    },
  );

  it('M/D/1 and M/G/1 (lognormal) mean waits match Pollaczek–Khinchine', () => {
    // Wq = ρ s (1 + cv²) / (2 (1 − ρ)).
    const md1 = run(mmc(1, 0.8, 2_000_000, { service: { distribution: 'constant', mean_ms: 1000 } }));
    expect(relativeError(md1.wait_ms.mean, (0.8 * 1000) / (2 * 0.2))).toBeLessThan(0.03);
    const mg1 = run(
      mmc(1, 0.6, 4_000_000, { service: { distribution: 'lognormal', mean_ms: 1000, cv: 1.5 } }),
    );
    expect(relativeError(mg1.sojourn_ms.mean - mg1.wait_ms.mean, 1000)).toBeLessThan(0.01);
    expect(relativeError(mg1.wait_ms.mean, (0.6 * 1000 * (1 + 1.5 * 1.5)) / (2 * 0.4))).toBeLessThan(0.05);
    expect(md1.erlang_c).toBeNull();
  });

  it('evenly spaced arrivals and constant service below capacity never wait', () => {
    for (const [servers, serviceMs] of [
      [1, 99.9],
      [3, 299],
    ] as const) {
      const r = run({
        arrival: { process: 'constant', rate_per_s: 10 },
        service: { distribution: 'constant', mean_ms: serviceMs },
        servers,
        customers: 100_000,
        seed: 1,
      });
      expect(r.wait_ms).toEqual({ count: 100_000, mean: 0, p50: 0, p90: 0, p95: 0, p99: 0, max: 0 });
      expect(r.probability_of_wait).toBe(0);
      expect(r.mean_queue_length).toBe(0);
      expect(r.wait_histogram.counts[0]).toBe(100_000);
      expect(relativeError(r.utilization, serviceMs / 100 / servers)).toBeLessThan(1e-3);
      expect(r.erlang_c).toBeNull();
    }
  });

  it.each([
    ['exponential', { distribution: 'exponential', mean_ms: 1000 }],
    ['lognormal', { distribution: 'lognormal', mean_ms: 1000, cv: 2 }],
  ] as const)(
    'no waiting room (queue_capacity 0) drops Erlang B of the arrivals (%s service)',
    (_n, service) => {
      const r = run(mmc(5, 0.6, 2_000_000, { queue_capacity: 0, service }));
      expect(relativeError(r.probability_of_drop, erlangB(5, 3))).toBeLessThan(0.02);
      expect(r.abandoned).toBe(0);
      expect(r.wait_ms.max).toBe(0);
      expect(r.served + r.dropped).toBe(2_000_000);
      expect(r.erlang_c).toBeNull();
    },
  );

  it('a patience close to zero makes every customer who would wait leave: Erlang B again', () => {
    const r = run(mmc(5, 0.6, 2_000_000, { patience_ms: 1e-6 }));
    expect(relativeError(r.probability_of_abandon, erlangB(5, 3))).toBeLessThan(0.02);
    expect(r.dropped).toBe(0);
    expect(r.wait_ms.max).toBeLessThanOrEqual(1e-6);
  });

  // Evenly spaced arrivals every 1000 ms from t = 1000, service 2500 ms, one server: the
  // line only grows, so who is served, dropped or gives up can be worked out by hand.
  const overloaded: ResolvedScenario = {
    arrival: { process: 'constant', rate_per_s: 1 },
    service: { distribution: 'constant', mean_ms: 2500 },
    servers: 1,
    customers: 8,
    patience_ms: 3000,
    seed: 1,
  };

  it('patience: customers give up after patience_ms, and one served exactly at its limit stays', () => {
    // Served: #0 (wait 0), #1 (1500), #2 (3000: the server frees as its patience ends),
    // #5 (2500), #7 (3000). #3, #4 and #6 give up.
    const r = run(overloaded);
    expect([r.served, r.dropped, r.abandoned]).toEqual([5, 0, 3]);
    expect(r.wait_ms.max).toBe(3000);
    expect(r.wait_ms.mean).toBe((0 + 1500 + 3000 + 2500 + 3000) / 5);
    expect(r.end_ms).toBe(11_000 + 2_500);
  });

  it('capacity: arrivals that find the line full are dropped', () => {
    // Line of 1: #1 waits (1500); #2 dropped; #3 waits (2000); #4 dropped; #5 joins as #3
    // starts at 6000 and waits 2500; #6 and #7 find #5 waiting and are dropped.
    const r = run({ ...overloaded, queue_capacity: 1 });
    expect([r.served, r.dropped, r.abandoned]).toEqual([4, 4, 0]);
    expect(r.wait_ms.mean).toBe((0 + 1500 + 2000 + 2500) / 4);
    expect(r.end_ms).toBe(11_000);
  });
});
