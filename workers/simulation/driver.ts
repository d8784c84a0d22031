/**
 * Runs an engine to the end in bounded slices: progress at every whole percent of
 * customers finished, a cancellation check after every slice (a slice is sized to take
 * about `sliceMs` of work), and a checkpoint whenever `checkpointEveryMs` have passed
 * since the last one. The wall clock is injected and only paces the reporting: it never
 * touches the simulation, whose result depends on the scenario alone.
 */
import type { Engine, EngineCheckpoint, StepResult } from './engine';

export interface DriveOptions {
  /** Called at every whole percent of customers finished (and at the end). */
  onProgress(progress: StepResult): void;
  /** Called with a checkpoint every `checkpointEveryMs`. */
  onCheckpoint(checkpoint: EngineCheckpoint): void;
  /** Checked after every slice; true stops the run. */
  isCancelled(): boolean;
  /** Monotonic wall clock in ms (e.g. performance.now). */
  monotonicMs(): number;
  /** @defaultValue 5000 */
  checkpointEveryMs?: number;
  /** Target work per slice, between two cancellation checks. @defaultValue 10 */
  sliceMs?: number;
}

const MIN_SLICE_EVENTS = 1024;
const MAX_SLICE_EVENTS = 1 << 22;

/** Drive the engine until it is done or cancelled. */
export function drive(engine: Engine, options: DriveOptions): 'done' | 'cancelled' {
  const checkpointEveryMs = options.checkpointEveryMs ?? 5000;
  const sliceMs = options.sliceMs ?? 10;
  const customers = engine.scenario.customers;
  // The next whole percent to report; an engine resumed mid-way starts after its own position.
  let percent = Math.floor((engine.finished * 100) / customers) + 1;
  let sliceEvents = 16_384;
  let lastCheckpoint = options.monotonicMs();
  for (;;) {
    if (options.isCancelled()) return 'cancelled';
    // Each event finishes at most one customer, so capping a step at the customers left
    // before the next mark lands exactly on it.
    const mark = Math.ceil((Math.min(percent, 100) * customers) / 100);
    const budget = Math.max(1, Math.min(sliceEvents, mark - engine.finished));
    const started = options.monotonicMs();
    const step = engine.step(budget);
    const elapsed = options.monotonicMs() - started;
    if (budget === sliceEvents) {
      if (elapsed < sliceMs / 2 && sliceEvents < MAX_SLICE_EVENTS) sliceEvents *= 2;
      else if (elapsed > sliceMs && sliceEvents > MIN_SLICE_EVENTS) sliceEvents /= 2;
    }
    if (step.done || step.finished >= mark) {
      options.onProgress(step);
      percent = Math.floor((step.finished * 100) / customers) + 1;
    }
    if (step.done) return 'done';
    const now = options.monotonicMs();
    if (now - lastCheckpoint >= checkpointEveryMs) {
      options.onCheckpoint(engine.checkpoint());
      lastCheckpoint = options.monotonicMs();
    }
  }
}
