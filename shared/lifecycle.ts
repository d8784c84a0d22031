import { systemClock, type Clock } from './clock';
import { withDeadline } from './deadline';
import { UnrestartableError } from './errors';
import type { Logger } from './logger';

/**
 * The one shape of every long-lived component (DESIGN.md §4.4, CONVENTIONS.md "Lifecycle"):
 * the worker runtime, the outbox relay, the schedule sync, the event forwarders.
 *
 * ```
 *   idle ─start()─▶ starting ─▶ running ─stop()─▶ stopping ─drained─▶ stopped ─start()─▶ starting …
 *                      │                              └─drain timeout─▶ unrestartable (start() throws)
 *                      └─start hook failed─▶ stopped
 * ```
 *
 * - One lifecycle lock per component, created with it and never replaced: every start and
 *   stop runs under it, one at a time, in call order. (Replacing the lock is what let two
 *   callers in at once in the audited service.)
 * - Idempotent calls: a start() while a start is pending returns that very promise, so
 *   concurrent callers start one loop; start() while running is a no-op. Likewise a stop()
 *   while a stop is pending returns that promise; stop() of a component that never started,
 *   or has stopped, resolves at once.
 * - stop() stops intake and drains (the `drain` hook), bounded by `drainTimeoutMs`. On timeout
 *   it force-closes, runs the cleanups, marks the component `unrestartable` and rejects with
 *   {@link DrainTimeoutError}; a later start() rejects with `UnrestartableError`, because work
 *   of the timed-out run may still be executing and a second loop would run beside it.
 * - A clean stop leaves the component `stopped`, and it may be started again: nothing of the
 *   previous run is still executing, and cleanups registered by that run have all run.
 * - Cleanups registered during a run always run at its end (clean stop, drain timeout, or a
 *   failed start), in reverse order of registration. Their errors are collected into an
 *   AggregateError and reported, never swallowed.
 */

export type LifecycleState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' | 'unrestartable';

export interface Lifecycle {
  /** @throws UnrestartableError after a stop() that timed out. */
  start(): Promise<void>;
  /** @throws DrainTimeoutError when active work outlived the drain timeout; AggregateError when cleanups failed. */
  stop(): Promise<void>;
  readonly state: LifecycleState;
}

export type Cleanup = () => Promise<void> | void;

/** Handed to the start hook: what it opens, it registers for closing. */
export interface LifecycleStartContext {
  onCleanup(fn: Cleanup): void;
}

export interface LifecycleHooks {
  /** Component name for logs and errors (`component` field). */
  name: string;
  /** Open resources and start intake. Register cleanups as resources are opened, so a start that fails halfway still closes what it opened. */
  start(ctx: LifecycleStartContext): Promise<void>;
  /** Stop intake, then wait for active work. `signal` aborts when the drain timeout passes; the hook need not settle after that. */
  drain(signal: AbortSignal): Promise<void>;
  /** Forceful close after the drain timeout: abort active work so it returns to its queue. */
  forceClose(): Promise<void>;
}

export interface LifecycleOptions {
  /** How long stop() waits for the drain hook before force-closing. Config DRAIN_TIMEOUT_MS. */
  drainTimeoutMs: number;
  /**
   * After a drain timeout, how long the force close and the cleanups may take before stop()
   * gives up on them (a connection that never answers, e.g. Redis down). @defaultValue 5000
   */
  forceCloseGraceMs?: number;
  logger: Logger;
  /** Measures drain durations for the logs. @defaultValue systemClock */
  clock?: Clock;
}

export interface ManagedLifecycle extends Lifecycle {
  /** Register a cleanup for the current run (equivalent to the start context's onCleanup). */
  onCleanup(fn: Cleanup): void;
}

/** stop() gave up waiting for active work: the component was force-closed and cannot be restarted. */
export class DrainTimeoutError extends Error {
  constructor(
    readonly component: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(
      `component "${component}" did not drain within ${timeoutMs} ms: it was force-closed and cannot be restarted`,
      options,
    );
    this.name = 'DrainTimeoutError';
  }
}

/** Create a component's lifecycle around its hooks. See the module comment for the contract. */
export function createLifecycle(hooks: LifecycleHooks, opts: LifecycleOptions): ManagedLifecycle {
  const { name } = hooks;
  const clock = opts.clock ?? systemClock;
  // The component field once: a logger that already carries it (a child made for the
  // component) is used as it is, or the line would hold the key twice.
  const logger =
    opts.logger.bindings().component === name ? opts.logger : opts.logger.child({ component: name });
  // The lifecycle lock: created once, never replaced.
  const lock = createSerialLock();

  let state: LifecycleState = 'idle';
  let cleanups: Cleanup[] = [];
  // The most recently requested operation, while it is queued or running: a repeated call of
  // the same kind returns its promise; a call of the other kind queues behind it.
  let pending: { kind: 'start' | 'stop'; promise: Promise<void> } | undefined;
  // The stop that made the component unrestartable; later stop() calls return it.
  let fatalStop: Promise<void> | undefined;

  const transition = (to: LifecycleState): void => {
    const from = state;
    state = to;
    logger.info({ from, to }, `${name}: ${from} -> ${to}`);
  };

  const onCleanup = (fn: Cleanup): void => {
    cleanups.push(fn);
  };

  const runCleanups = async (): Promise<unknown[]> => {
    const toRun = cleanups;
    cleanups = [];
    const errors: unknown[] = [];
    for (const fn of toRun.reverse()) {
      try {
        await fn();
      } catch (err) {
        logger.error({ err }, `${name}: cleanup failed`);
        errors.push(err);
      }
    }
    return errors;
  };

  const unrestartable = () =>
    new UnrestartableError(
      `component "${name}" timed out while stopping (drain timeout ${opts.drainTimeoutMs} ms) and cannot be restarted; restart the process`,
    );

  const doStart = async (): Promise<void> => {
    if (state === 'running') return;
    if (state === 'unrestartable') throw unrestartable();
    transition('starting');
    try {
      await hooks.start({ onCleanup });
    } catch (err) {
      const errors = await runCleanups();
      transition('stopped');
      if (errors.length > 0)
        throw new AggregateError([err, ...errors], `${name}: start failed, and so did cleanup`);
      throw err;
    }
    transition('running');
  };

  const doStop = async (): Promise<void> => {
    // A start that failed leaves nothing to stop.
    if (state !== 'running') return;
    transition('stopping');
    const startedAt = clock.monotonic();
    const outcome = await drainWithin(hooks.drain, opts.drainTimeoutMs, (err) =>
      logger.warn({ err }, `${name}: drain failed after the drain timeout`),
    );
    const drainMs = Math.round(clock.monotonic() - startedAt);

    if (outcome.kind === 'drained') {
      const errors = await runCleanups();
      transition('stopped');
      logger.info({ drain_ms: drainMs }, `${name}: drained`);
      if (errors.length > 0) throw new AggregateError(errors, `${name}: ${errors.length} cleanup(s) failed`);
      return;
    }

    const errors: unknown[] = [];
    if (outcome.kind === 'failed') {
      logger.error({ err: outcome.error }, `${name}: drain failed: force-closing`);
      errors.push(outcome.error);
    } else {
      logger.error(
        { component: name, drain_timeout_ms: opts.drainTimeoutMs },
        `${name}: active work outlived the drain timeout: force-closing`,
      );
    }
    const graceMs = opts.forceCloseGraceMs ?? 5_000;
    const closing = (async () => {
      try {
        await hooks.forceClose();
      } catch (err) {
        logger.error({ err }, `${name}: force close failed`);
        errors.push(err);
      }
      errors.push(...(await runCleanups()));
    })();
    // Closing waits on connections; one that never answers (Redis down) must not keep the
    // process from exiting: what is left is abandoned, and the process exits anyway.
    try {
      await withDeadline(`${name}: force close and cleanups`, graceMs, closing);
    } catch (err) {
      logger.error(
        { grace_ms: graceMs },
        `${name}: force close and cleanups did not finish within ${graceMs} ms: leaving them`,
      );
      errors.push(err);
    }
    // Work of this run may still be executing: a second run must never start beside it.
    transition('unrestartable');
    const cause =
      errors.length > 0 ? new AggregateError(errors, `${name}: errors while force-closing`) : undefined;
    if (outcome.kind === 'failed') throw cause;
    throw new DrainTimeoutError(name, opts.drainTimeoutMs, cause === undefined ? undefined : { cause });
  };

  const enqueue = (kind: 'start' | 'stop', op: () => Promise<void>): Promise<void> => {
    const promise = lock.run(op);
    const entry = { kind, promise };
    pending = entry;
    const settle = () => {
      if (pending === entry) pending = undefined;
    };
    // then(settle, settle) handles the rejection for this bookkeeping branch only; the
    // caller still receives `promise` and its rejection.
    promise.then(settle, settle);
    return promise;
  };

  return {
    get state() {
      return state;
    },
    onCleanup,
    start() {
      if (pending?.kind === 'start') return pending.promise;
      if (state === 'unrestartable') return Promise.reject(unrestartable());
      if (state === 'running' && pending === undefined) return Promise.resolve();
      return enqueue('start', doStart);
    },
    stop() {
      if (pending?.kind === 'stop') return pending.promise;
      if (state === 'unrestartable' && pending === undefined && fatalStop) return fatalStop;
      if ((state === 'idle' || state === 'stopped') && pending === undefined) return Promise.resolve();
      const promise = enqueue('stop', doStop);
      promise.catch(() => {
        if (state === 'unrestartable') fatalStop = promise;
      });
      return promise;
    },
  };
}

type DrainOutcome = { kind: 'drained' } | { kind: 'timeout' } | { kind: 'failed'; error: unknown };

/**
 * Run the drain hook, bounded by a deadline. The timer is a deadline only: it aborts the
 * hook's signal and stops the wait; it drives no work.
 */
async function drainWithin(
  drain: (signal: AbortSignal) => Promise<void>,
  timeoutMs: number,
  onLateFailure: (err: unknown) => void,
): Promise<DrainOutcome> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<DrainOutcome>((resolve) => {
    timer = setTimeout(() => {
      controller.abort(new Error(`drain timeout of ${timeoutMs} ms passed`));
      resolve({ kind: 'timeout' });
    }, timeoutMs);
  });
  let timedOut = false;
  const drained = (async (): Promise<DrainOutcome> => {
    try {
      await drain(controller.signal);
      return { kind: 'drained' };
    } catch (error) {
      if (timedOut) onLateFailure(error);
      return { kind: 'failed', error };
    }
  })();
  try {
    const outcome = await Promise.race([drained, deadline]);
    if (outcome.kind === 'timeout') timedOut = true;
    return outcome;
  } finally {
    clearTimeout(timer);
  }
}

/** Runs async operations one at a time, in call order. */
function createSerialLock(): { run<T>(op: () => Promise<T>): Promise<T> } {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    run<T>(op: () => Promise<T>): Promise<T> {
      const result = tail.then(op);
      tail = result.then(
        () => undefined,
        () => undefined,
      );
      return result;
    },
  };
}
