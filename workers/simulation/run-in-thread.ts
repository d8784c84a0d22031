/**
 * Run a simulation in a node:worker_threads Worker so the caller's event loop (BullMQ
 * lock renewal, Redlock extension, HTTP) never stalls behind it.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ResolvedScenario, SimulationResult } from '../../shared/contract/simulation';
import type { EngineCheckpoint } from './engine';
import type { ThreadInput, ThreadMessage } from './thread';

/** How long a cancelled thread may take to stop by itself before it is terminated. */
const CANCEL_GRACE_MS = 250;

export interface ThreadProgress {
  /** finished / customers, 0..1. */
  progress: number;
  /** Customers that have left. */
  finished: number;
  /** Events handled so far. */
  events: number;
}

export interface RunInThreadOptions {
  /** Resume from this checkpoint (of the same scenario). */
  checkpoint?: EngineCheckpoint;
  /** Called at every whole percent of customers finished and at the end. */
  onProgress?: (progress: ThreadProgress) => void | Promise<void>;
  /** Called with a checkpoint at least every `checkpointEveryMs` of work. */
  onCheckpoint?: (checkpoint: EngineCheckpoint) => void | Promise<void>;
  /** Aborting stops the thread (within 1 s) and rejects with the signal's reason. */
  signal?: AbortSignal;
  /** @defaultValue 5000 */
  checkpointEveryMs?: number;
}

/** URL of tsx's ESM API (the `import` condition of `tsx/esm/api`; require.resolve would give the CJS one). */
function tsxEsmApiUrl(): string {
  const require = createRequire(import.meta.url);
  const manifestPath = require.resolve('tsx/package.json');
  const manifest = require(manifestPath) as { exports: Record<string, { import: { default: string } }> };
  const target = manifest.exports['./esm/api']?.import.default ?? './dist/esm/api/index.mjs';
  return new URL(target, pathToFileURL(manifestPath)).href;
}

/**
 * The Worker's bootstrap: thread.ts is TypeScript, and on Node 20 a worker does not get
 * loader hooks from `execArgv: ['--import', 'tsx']` (ERR_UNKNOWN_FILE_EXTENSION), so a
 * small eval'd script registers tsx in the thread itself and then imports the entry.
 */
function threadBootstrap(): string {
  const entry = new URL('./thread.ts', import.meta.url).href;
  const tsxApi = tsxEsmApiUrl();
  return `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })
  .catch((err) => { require('node:worker_threads').parentPort.postMessage({ type: 'error', message: String(err && err.message || err), stack: err && err.stack }); });`;
}

/**
 * Run the scenario to the end in a worker thread.
 * @returns the result, once every customer has left.
 * @throws the signal's reason when aborted; an Error when the engine fails, the thread
 * dies, or a listener throws (the thread is then stopped).
 */
export function runInThread(
  scenario: ResolvedScenario,
  options: RunInThreadOptions = {},
): Promise<SimulationResult> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const input: ThreadInput = {
    scenario,
    checkpoint: options.checkpoint,
    cancel,
    checkpointEveryMs: options.checkpointEveryMs ?? 5000,
  };
  const worker = new Worker(threadBootstrap(), { eval: true, workerData: input });

  return new Promise<SimulationResult>((resolve, reject) => {
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;
    const settle = (outcome: { result: SimulationResult } | { error: unknown }): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      if (graceTimer !== undefined) clearTimeout(graceTimer);
      // terminate() on a thread that already ended is a no-op; either way it is gone
      // before the caller hears the outcome.
      void worker.terminate().then(() => {
        if ('result' in outcome) resolve(outcome.result);
        else reject(outcome.error);
      });
    };
    const fail = (err: unknown): void =>
      settle({ error: err instanceof Error ? err : new Error(String(err)) });
    const listen = (call: () => void | Promise<void>): void => {
      try {
        const pending = call();
        if (pending instanceof Promise) pending.catch(fail);
      } catch (err) {
        fail(err);
      }
    };
    function onAbort(): void {
      Atomics.store(cancel, 0, 1);
      // A deadline, not a driver of work: the thread normally stops at its next slice.
      graceTimer = setTimeout(() => settle({ error: signal!.reason }), CANCEL_GRACE_MS);
    }
    signal?.addEventListener('abort', onAbort, { once: true });

    worker.on('message', (message: ThreadMessage) => {
      if (settled) return;
      switch (message.type) {
        case 'progress': {
          const { progress, finished, events } = message;
          if (options.onProgress) listen(() => options.onProgress!({ progress, finished, events }));
          break;
        }
        case 'checkpoint':
          if (options.onCheckpoint) listen(() => options.onCheckpoint!(message.checkpoint));
          break;
        case 'result':
          settle({ result: message.result });
          break;
        case 'cancelled':
          settle({ error: signal?.reason ?? new Error('simulation cancelled') });
          break;
        case 'error': {
          const err = new Error(message.message);
          if (message.stack !== undefined) err.stack = message.stack;
          settle({ error: err });
          break;
        }
      }
    });
    worker.on('error', (err) => fail(err));
    worker.on('exit', (code) => {
      if (!settled) fail(new Error(`simulation thread exited with code ${code} before its result`));
    });
  });
}
