import { describe, expect, it } from 'vitest';
import { Xoshiro128 } from '../../workers/simulation/rng';
import { FixedHistogram, LogLinearHistogram, WAIT_EDGES_MS } from '../../workers/simulation/stats';

describe('simulation statistics', () => {
  it('xoshiro128** gives the reference sequence', () => {
    const rng = new Xoshiro128([1, 2, 3, 4]);
    expect([1, 2, 3, 4, 5, 6].map(() => rng.nextU32())).toEqual([
      11520, 0, 5927040, 70819200, 2031721883, 1637235492,
    ]);
  });

  it('percentiles are within 0.5 % of the exact ones, and mean and max are exact', () => {
    const rng = new Xoshiro128([9, 8, 7, 6]);
    const values: number[] = [];
    let sum = 0;
    const h = new LogLinearHistogram();
    for (let i = 0; i < 200_000; i++) {
      // Spread over 12 decades, with some exact zeros.
      const v = i % 10 === 0 ? 0 : Math.exp(rng.nextOpen01() * 28 - 14);
      values.push(v);
      sum += v;
      h.record(v);
    }
    values.sort((a, b) => a - b);
    const exact = (q: number) => values[Math.ceil(q * values.length) - 1]!;
    for (const q of [0.11, 0.2, 0.5, 0.9, 0.95, 0.99, 0.999]) {
      const got = h.quantile(q);
      const want = exact(q);
      expect(Math.abs(got - want) / want, `q=${q}`).toBeLessThanOrEqual(0.005);
    }
    expect(h.quantile(0.1)).toBe(0);
    expect(h.max).toBe(values[values.length - 1]);
    expect(h.summary().mean).toBe(sum / values.length);
  });

  it('a histogram survives a JSON round trip', () => {
    const h = new LogLinearHistogram();
    for (const v of [0, 1e-12, 0.5, 3, 3, 1e9, 7e20]) h.record(v);
    const back = LogLinearHistogram.fromState(JSON.parse(JSON.stringify(h.state())));
    expect(back.summary()).toEqual(h.summary());
    expect(back.quantile(1)).toBe(7e20);
  });

  it('the wait histogram counts zero, each (lower, upper] bucket and the overflow', () => {
    const f = new FixedHistogram();
    for (const v of [0, 0.005, 0.01, 0.0100001, 1, 1.5, 1e8, 1e9]) f.record(v);
    const counts = f.state();
    expect(counts).toHaveLength(WAIT_EDGES_MS.length + 1);
    expect(counts[0]).toBe(1); // exactly 0
    expect(counts[1]).toBe(2); // (0, 0.01]
    expect(counts[2]).toBe(1); // (0.01, 0.02]
    expect(counts[WAIT_EDGES_MS.indexOf(1)]).toBe(1);
    expect(counts[WAIT_EDGES_MS.indexOf(2)]).toBe(1);
    expect(counts[WAIT_EDGES_MS.length - 1]).toBe(1); // (5e7, 1e8]
    expect(counts[WAIT_EDGES_MS.length]).toBe(1); // > 1e8
  });
});
