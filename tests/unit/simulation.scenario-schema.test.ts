import { describe, expect, it } from 'vitest';
import {
  resolvedScenarioSchema,
  resolveSeed,
  simulationScenarioSchema,
} from '../../shared/contract/simulation';

const valid = {
  arrival: { process: 'poisson', rate_per_s: 100 },
  service: { distribution: 'exponential', mean_ms: 50 },
  servers: 8,
  customers: 1_000_000,
};

function issuePaths(input: unknown): string[] {
  const parsed = simulationScenarioSchema.safeParse(input);
  expect(parsed.success).toBe(false);
  return parsed.error!.issues.map((i) => `${i.path.join('.')}: ${i.code}`).sort();
}

describe('simulation scenario schema', () => {
  it('accepts a minimal scenario and leaves the seed to be chosen', () => {
    const parsed = simulationScenarioSchema.parse(valid);
    expect(parsed.seed).toBeUndefined();
    expect(resolveSeed(parsed, () => 77).seed).toBe(77);
    expect(resolveSeed({ ...parsed, seed: 5 }, () => 77).seed).toBe(5);
    const random = resolveSeed(parsed).seed;
    expect(Number.isInteger(random) && random >= 0 && random <= 0xffffffff).toBe(true);
    expect(resolvedScenarioSchema.parse(resolveSeed(parsed, () => random))).toEqual({
      ...valid,
      seed: random,
    });
  });

  it('accepts every optional field at its bounds', () => {
    const full = {
      arrival: { process: 'constant', rate_per_s: 1e6 },
      service: { distribution: 'lognormal', mean_ms: 1e7, cv: 10 },
      servers: 1024,
      customers: 50_000_000,
      queue_capacity: 0,
      patience_ms: 1e10,
      warmup_customers: 49_999_999,
      seed: 0xffffffff,
    };
    expect(simulationScenarioSchema.parse(full)).toEqual(full);
  });

  it('gives lognormal service a default cv of 1', () => {
    const parsed = simulationScenarioSchema.parse({
      ...valid,
      service: { distribution: 'lognormal', mean_ms: 5 },
    });
    expect(parsed.service).toEqual({ distribution: 'lognormal', mean_ms: 5, cv: 1 });
  });

  it('lists every problem of a bad scenario in one parse', () => {
    const paths = issuePaths({
      arrival: { process: 'poisson', rate_per_s: -5 },
      service: { distribution: 'exponential', mean_ms: 50 },
      servers: 0,
      customers: 50_000_001,
      seed: 'abc',
      colour: 'blue',
    });
    expect(paths).toEqual([
      ': unrecognized_keys',
      'arrival.rate_per_s: too_small',
      'customers: too_big',
      'seed: invalid_type',
      'servers: too_small',
    ]);
  });

  it('refuses cv on distributions other than lognormal, and a warmup as long as the run', () => {
    expect(
      issuePaths({
        ...valid,
        service: { distribution: 'exponential', mean_ms: 50, cv: 2 },
        warmup_customers: 1_000_000,
      }),
    ).toEqual(['service: unrecognized_keys', 'warmup_customers: custom']);
  });

  it.each([
    ['rate_per_s above 1e6', { arrival: { process: 'poisson', rate_per_s: 1e6 + 1 } }],
    ['an unknown arrival process', { arrival: { process: 'bursty', rate_per_s: 1 } }],
    ['mean_ms above 1e7', { service: { distribution: 'constant', mean_ms: 2e7 } }],
    ['a zero mean_ms', { service: { distribution: 'constant', mean_ms: 0 } }],
    ['infinity', { service: { distribution: 'constant', mean_ms: Infinity } }],
    ['cv above 10', { service: { distribution: 'lognormal', mean_ms: 1, cv: 11 } }],
    ['an unknown distribution', { service: { distribution: 'weibull', mean_ms: 1 } }],
    ['fractional servers', { servers: 2.5 }],
    ['servers above 1024', { servers: 1025 }],
    ['a negative queue_capacity', { queue_capacity: -1 }],
    ['zero patience', { patience_ms: 0 }],
    ['a seed above uint32', { seed: 2 ** 32 }],
    ['a negative seed', { seed: -1 }],
    ['an unknown field in arrival', { arrival: { process: 'poisson', rate_per_s: 1, burst: 2 } }],
  ])('refuses %s', (_what, patch) => {
    expect(simulationScenarioSchema.safeParse({ ...valid, ...patch }).success).toBe(false);
  });

  it('requires a seed in a resolved scenario', () => {
    expect(resolvedScenarioSchema.safeParse(valid).success).toBe(false);
    expect(resolvedScenarioSchema.safeParse({ ...valid, seed: 3 }).success).toBe(true);
  });
});
