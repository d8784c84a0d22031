import { describe, expect, it } from 'vitest';
import { erlangB, erlangC, erlangCMeanWait } from '../../workers/simulation/erlang-c';

describe('Erlang formulas', () => {
  it('Erlang B matches known values', () => {
    expect(erlangB(1, 1)).toBeCloseTo(0.5, 15);
    expect(erlangB(2, 1)).toBeCloseTo(0.2, 15);
    // Textbook table: B(10, 5) = 0.018385, B(5, 3) = 0.110054.
    expect(erlangB(10, 5)).toBeCloseTo(0.0183846, 6);
    expect(erlangB(5, 3)).toBeCloseTo(0.1100543, 6);
  });

  it('Erlang C matches known values', () => {
    expect(erlangC(2, 1)).toBeCloseTo(1 / 3, 15);
    // M/M/1: P(wait) = ρ.
    expect(erlangC(1, 0.7)).toBeCloseTo(0.7, 15);
    // Call-centre example: 10 agents, 8 Erlangs → C = 0.409.
    expect(erlangC(10, 8)).toBeCloseTo(0.40918, 4);
  });

  it('the mean wait is C × s / (c − a)', () => {
    // M/M/1 at ρ = 0.5 with s = 2: Wq = ρ s / (1 − ρ) = 2.
    expect(erlangCMeanWait(1, 0.5, 2)).toBeCloseTo(2, 14);
    expect(erlangCMeanWait(2, 1, 1000)).toBeCloseTo(1000 / 3, 10);
  });

  it('stays finite for a thousand servers', () => {
    const c = erlangC(1024, 1000);
    expect(c).toBeGreaterThan(0);
    expect(c).toBeLessThan(1);
  });

  it('refuses an unstable load and bad arguments', () => {
    expect(() => erlangC(2, 2)).toThrow(RangeError);
    expect(() => erlangB(0, 1)).toThrow(RangeError);
    expect(() => erlangB(2, -1)).toThrow(RangeError);
  });
});
