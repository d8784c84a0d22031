/**
 * Worker-thread entry: runs one simulation off the main event loop and reports through
 * postMessage (see {@link ThreadMessage}). Started by run-in-thread.ts; workerData is a
 * {@link ThreadInput}. Cancellation is a shared Int32 flag the parent sets, read after
 * every slice of work.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ResolvedScenario, SimulationResult } from '../../shared/contract/simulation';
import { drive } from './driver';
import { createEngine, type EngineCheckpoint } from './engine';

export interface ThreadInput {
  scenario: ResolvedScenario;
  checkpoint: EngineCheckpoint | undefined;
  /** Int32Array over a SharedArrayBuffer; element 0 set to 1 means cancel. */
  cancel: Int32Array;
  checkpointEveryMs: number;
}

export type ThreadMessage =
  | { type: 'progress'; progress: number; finished: number; events: number }
  | { type: 'checkpoint'; checkpoint: EngineCheckpoint }
  | { type: 'result'; result: SimulationResult; events: number }
  | { type: 'cancelled' }
  | { type: 'error'; message: string; stack: string | undefined };

function post(message: ThreadMessage): void {
  parentPort!.postMessage(message);
}

function run(input: ThreadInput): void {
  const engine = createEngine(input.scenario, input.checkpoint);
  const outcome = drive(engine, {
    onProgress: (p) =>
      post({ type: 'progress', progress: p.progress, finished: p.finished, events: engine.events }),
    onCheckpoint: (checkpoint) => post({ type: 'checkpoint', checkpoint }),
    isCancelled: () => Atomics.load(input.cancel, 0) !== 0,
    monotonicMs: () => performance.now(),
    checkpointEveryMs: input.checkpointEveryMs,
  });
  if (outcome === 'cancelled') post({ type: 'cancelled' });
  else post({ type: 'result', result: engine.result(), events: engine.events });
}

if (parentPort !== null) {
  try {
    run(workerData as ThreadInput);
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    post({ type: 'error', message: e.message, stack: e.stack });
  }
}
