import { monitorEventLoopDelay } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import type { ResolvedScenario } from '../../shared/contract/simulation';
import { createEngine, type EngineCheckpoint } from '../../workers/simulation/engine';
import { runInThread, type ThreadProgress } from '../../workers/simulation/run-in-thread';

const scenario = (customers: number): ResolvedScenario => ({
  arrival: { process: 'poisson', rate_per_s: 6.4 },
  service: { distribution: 'exponential', mean_ms: 1000 },
  servers: 8,
  customers,
  warmup_customers: 1_000,
  seed: 4242,
});

function inProcess(s: ResolvedScenario): string {
  const engine = createEngine(s);
  while (!engine.step(1_000_000).done);
  return JSON.stringify(engine.result());
}

describe('simulation in a worker thread', () => {
  it('reports progress at every whole percent and gives the in-process result', async () => {
    const s = scenario(2_000_000);
    const reports: ThreadProgress[] = [];
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const result = await runInThread(s, { onProgress: (p) => void reports.push(p) });
    delay.disable();
    expect(JSON.stringify(result)).toBe(inProcess(s));
    expect(reports).toHaveLength(100);
    reports.forEach((r, i) => expect(r.finished).toBe(Math.ceil(((i + 1) * 2_000_000) / 100)));
    expect(reports.at(-1)!.progress).toBe(1);
    // The main event loop kept turning while the thread worked.
    expect(delay.max / 1e6).toBeLessThan(500);
  });

  it('posts checkpoints, and a run resumed from one ends with the uninterrupted result', async () => {
    const s = scenario(3_000_000);
    const checkpoints: EngineCheckpoint[] = [];
    await runInThread(s, { checkpointEveryMs: 20, onCheckpoint: (cp) => void checkpoints.push(cp) });
    expect(checkpoints.length).toBeGreaterThanOrEqual(2);
    const middle = checkpoints[Math.floor(checkpoints.length / 2)]!;
    expect(middle.finished).toBeGreaterThan(0);
    expect(middle.finished).toBeLessThan(3_000_000);
    const progress: number[] = [];
    const resumed = await runInThread(s, {
      checkpoint: JSON.parse(JSON.stringify(middle)) as EngineCheckpoint,
      onProgress: (p) => void progress.push(p.finished),
    });
    expect(JSON.stringify(resumed)).toBe(inProcess(s));
    expect(progress[0]).toBeGreaterThan(middle.finished);
  });

  it('cancelling through the signal stops the thread within 1 s', async () => {
    const controller = new AbortController();
    let resolveStarted!: () => void;
    const started = new Promise<void>((r) => (resolveStarted = r));
    const run = runInThread(scenario(50_000_000), {
      signal: controller.signal,
      onProgress: () => resolveStarted(),
    });
    await started;
    const t0 = performance.now();
    controller.abort();
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('an already aborted signal never starts a thread', async () => {
    await expect(runInThread(scenario(10), { signal: AbortSignal.abort() })).rejects.toMatchObject({
      name: 'AbortError',
    });
  });

  it('an engine failure in the thread rejects the run', async () => {
    const other = createEngine({ ...scenario(1_000), seed: 1 });
    other.step(10);
    await expect(runInThread(scenario(1_000), { checkpoint: other.checkpoint() })).rejects.toThrow(
      /another scenario/,
    );
  });

  it('a throwing listener stops the run and rejects it', async () => {
    await expect(
      runInThread(scenario(1_000_000), {
        onProgress: () => {
          throw new Error('sink down');
        },
      }),
    ).rejects.toThrow('sink down');
  });
});
