import { describe, expect, it } from 'vitest';
import type { ResolvedScenario } from '../../shared/contract/simulation';
import {
  CheckpointMismatchError,
  createEngine,
  type EngineCheckpoint,
} from '../../workers/simulation/engine';

function runToEnd(scenario: ResolvedScenario, stepSize = 100_000, from?: EngineCheckpoint): string {
  const engine = createEngine(scenario, from);
  while (!engine.step(stepSize).done);
  return JSON.stringify(engine.result());
}

/** Run `cut` events, checkpoint, send the checkpoint through JSON, resume in a new engine. */
function runWithCut(
  scenario: ResolvedScenario,
  cut: number,
): { result: string; checkpoint: EngineCheckpoint } {
  const first = createEngine(scenario);
  first.step(cut);
  const checkpoint = JSON.parse(JSON.stringify(first.checkpoint())) as EngineCheckpoint;
  return { result: runToEnd(scenario, 7_919, checkpoint), checkpoint };
}

const mm8: ResolvedScenario = {
  arrival: { process: 'poisson', rate_per_s: 7.2 },
  service: { distribution: 'exponential', mean_ms: 1000 },
  servers: 8,
  customers: 50_000,
  warmup_customers: 5_000,
  seed: 12345,
};

// Overloaded, with a bounded line, patience and warmup: every kind of event happens often.
const boundedImpatient: ResolvedScenario = {
  arrival: { process: 'poisson', rate_per_s: 12 },
  service: { distribution: 'lognormal', mean_ms: 1000, cv: 1.5 },
  servers: 10,
  customers: 40_000,
  queue_capacity: 25,
  patience_ms: 800,
  warmup_customers: 1_000,
  seed: 7,
};

// Unlimited line, overloaded with patience: the line lives in the replayed arrival stream.
const unboundedImpatient: ResolvedScenario = {
  arrival: { process: 'poisson', rate_per_s: 3 },
  service: { distribution: 'exponential', mean_ms: 1000 },
  servers: 2,
  customers: 30_000,
  patience_ms: 5_000,
  warmup_customers: 100,
  seed: 99,
};

describe('simulation determinism', () => {
  it('the same scenario and seed give a byte-identical result whatever the step size', () => {
    const a = runToEnd(mm8, 1_000_000);
    expect(runToEnd(mm8, 1)).toBe(a);
    expect(runToEnd(mm8, 333)).toBe(a);
    expect(runToEnd(structuredClone(mm8), 65_536)).toBe(a);
  });

  it('another seed gives another result', () => {
    expect(runToEnd({ ...mm8, seed: 12346 })).not.toBe(runToEnd(mm8));
  });

  it('a result has only counts and simulated figures that add up', () => {
    const r = JSON.parse(runToEnd(boundedImpatient)) as Record<string, any>;
    expect(r.customers).toBe(40_000);
    expect(r.served + r.dropped + r.abandoned).toBe(40_000);
    expect(r.measured.served + r.measured.dropped + r.measured.abandoned).toBe(39_000);
    expect(r.dropped).toBeGreaterThan(0);
    expect(r.abandoned).toBeGreaterThan(0);
    expect(r.wait_ms.max).toBeLessThanOrEqual(800);
    expect(r.wait_histogram.counts.reduce((s: number, c: number) => s + c, 0)).toBe(r.measured.served);
  });
});

describe('simulation checkpoints', () => {
  it.each([
    ['M/M/8 with warmup', mm8, [1, 2, 9_999, 10_000, 10_001, 55_555, 99_998]],
    ['bounded line, patience, lognormal', boundedImpatient, [3, 1_999, 2_000, 2_001, 31_337, 79_000]],
    ['unlimited line with patience', unboundedImpatient, [1, 150, 12_345, 40_000, 59_999]],
  ] as const)('%s: resuming from any cut point gives the uninterrupted result', (_name, scenario, cuts) => {
    const reference = runToEnd(scenario);
    for (const cut of cuts) expect(runWithCut(scenario, cut).result, `cut at ${cut}`).toBe(reference);
  });

  it('cut points in the middle of a waiting line resume exactly', () => {
    for (const scenario of [boundedImpatient, unboundedImpatient]) {
      const reference = runToEnd(scenario);
      let midQueue = 0;
      for (let cut = 5_000; cut < 60_000; cut += 4_999) {
        const { result, checkpoint } = runWithCut(scenario, cut);
        expect(result).toBe(reference);
        if (checkpoint.queue.length > 0) midQueue++;
      }
      expect(midQueue).toBeGreaterThanOrEqual(5);
    }
  });

  it('a run checkpointed and resumed again and again ends with the uninterrupted result', () => {
    const reference = runToEnd(boundedImpatient);
    let engine = createEngine(boundedImpatient);
    let resumes = 0;
    while (!engine.step(1_013).done) {
      engine = createEngine(
        boundedImpatient,
        JSON.parse(JSON.stringify(engine.checkpoint())) as EngineCheckpoint,
      );
      resumes++;
    }
    expect(resumes).toBeGreaterThan(50);
    expect(JSON.stringify(engine.result())).toBe(reference);
  });

  it('a checkpoint of a finished run still gives the same result', () => {
    const engine = createEngine(mm8);
    while (!engine.step(1_000_000).done);
    const resumed = createEngine(mm8, JSON.parse(JSON.stringify(engine.checkpoint())) as EngineCheckpoint);
    expect(resumed.step(10)).toEqual({ done: true, progress: 1, finished: 50_000 });
    expect(JSON.stringify(resumed.result())).toBe(JSON.stringify(engine.result()));
  });

  it('a checkpoint of another scenario is refused', () => {
    const engine = createEngine(mm8);
    engine.step(100);
    expect(() => createEngine({ ...mm8, seed: 1 }, engine.checkpoint())).toThrow(/another scenario/);
  });

  it('a malformed checkpoint is refused with a checkpoint error', () => {
    const malformed = { version: 1, scenario: mm8 } as unknown as EngineCheckpoint;
    expect(() => createEngine(mm8, malformed)).toThrow(CheckpointMismatchError);
    expect(() => createEngine(mm8, { version: 2 } as unknown as EngineCheckpoint)).toThrow(/version/);
  });

  it('a result is refused before the run is done', () => {
    const engine = createEngine(mm8);
    engine.step(100);
    expect(() => engine.result()).toThrow(/not finished/);
  });
});
