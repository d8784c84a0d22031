import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Clock } from '../../shared/clock';
import { resolvedScenarioSchema, type ResolvedScenario } from '../../shared/contract/simulation';
import type { DatabaseHandle } from '../../shared/db/database';
import {
  completeSimulationRun,
  failSimulationRun,
  getSimulationCheckpoint,
  markSimulationCancelled,
  noteSimulationAttemptError,
  recordSimulationProgress,
  saveSimulationCheckpoint,
  startSimulationRun,
  type SimulationRow,
} from '../../shared/db/simulations-store';
import { LockBusyError, StaleFenceError, toError } from '../../shared/errors';
import { withFenceRecovery, type Locks, type SingleRunnerContext } from '../../shared/locks';
import type { Logger } from '../../shared/logger';
import type { EngineCheckpoint } from '../simulation/engine';
import { runInThread, type ThreadProgress } from '../simulation/run-in-thread';
import type { JobProcessor } from '../registry';

export interface SimulationProcessorDeps {
  db: DatabaseHandle;
  locks: Locks;
  clock: Clock;
  /** How often the engine hands over a checkpoint to store. @defaultValue 5000 */
  checkpointEveryMs?: number;
}

/** A job that finds `simulation:<id>` held waits this long, delayed (not failed), then tries again. */
export const SIMULATION_BUSY_DELAY_MS = 2_000;
/** Progress is written at most this often unless it moved a whole percent. */
export const PROGRESS_WRITE_EVERY_MS = 250;

export const simulationScope = (id: string) => `simulation:${id}`;

const isFinalAttempt = (job: Job) => job.attemptsMade + 1 >= (job.opts.attempts ?? 1);

/** Aborts the run when the client asked to cancel it; told apart from a lost lock. */
class SimulationCancelledSignal extends Error {
  constructor() {
    super('simulation cancelled on request');
    this.name = 'SimulationCancelledSignal';
  }
}

/** Start the run under our fence, recovering a fencing counter Redis lost. */
async function startFenced(
  deps: SimulationProcessorDeps,
  lock: SingleRunnerContext,
  id: string,
  progressBp: number,
) {
  return withFenceRecovery(
    lock,
    (fence) => startSimulationRun(deps.db.db, { id, fence, now: deps.clock.now().getTime(), progressBp }),
    (r) => r.outcome === 'stale-fence',
    // Only called for a stale outcome, which always carries the row.
    (r) => ('row' in r ? Number(r.row.fence) : 0),
  );
}

/**
 * `run-simulation` (queue simulations, DESIGN.md §6): exactly one runner per simulation_id
 * (`withSingleRunner('simulation:<id>')`, a busy scope delays the job), a fenced start, the
 * engine in a worker thread resumed from the stored checkpoint, fenced progress and
 * checkpoint writes, cancellation seen at every progress tick, and a fenced final write.
 */
export function createSimulationProcessors(deps: SimulationProcessorDeps): Record<string, JobProcessor> {
  const db = deps.db.db;
  const now = () => deps.clock.now().getTime();

  const runSimulation: JobProcessor<{ simulation_id: string }> = async (job, ctx) => {
    const id = job.data.simulation_id;
    const log = ctx.logger.child({ simulation_id: id });
    try {
      return await deps.locks.withSingleRunner(simulationScope(id), (lock) => runLocked(job, lock, log), {
        signal: ctx.signal,
      });
    } catch (err) {
      if (err instanceof LockBusyError && ctx.token !== undefined) {
        log.info(
          { scope: simulationScope(id), delay_ms: SIMULATION_BUSY_DELAY_MS },
          'simulation scope busy: job delayed',
        );
        await job.moveToDelayed(Date.now() + SIMULATION_BUSY_DELAY_MS, ctx.token);
        throw new DelayedError();
      }
      throw err;
    }
  };

  async function runLocked(job: Job<{ simulation_id: string }>, lock: SingleRunnerContext, log: Logger) {
    const id = job.data.simulation_id;
    const stored = await getSimulationCheckpoint(db, id);
    const started = await startFenced(deps, lock, id, stored ? Number(stored.progress_bp) : 0);
    if (started.outcome === 'missing' || started.outcome === 'terminal') {
      log.info({ outcome: started.outcome }, 'simulation already finished or gone: nothing to do');
      return { simulation_id: id, skipped: started.outcome };
    }
    if (started.outcome === 'cancel-requested') {
      await finishCancelled(lock, id, log);
      return { simulation_id: id, status: 'cancelled' };
    }
    const row = started.row;
    log.info(
      { scope: lock.scope, fence: lock.fence, status: 'running', attempt: Number(row.attempts) },
      'simulation running',
    );
    let scenario: ResolvedScenario;
    try {
      scenario = resolvedScenarioSchema.parse(JSON.parse(row.scenario));
    } catch (err) {
      const e = new UnrecoverableError(`stored scenario is unreadable: ${toError(err).message}`);
      await failSimulationRun(db, { id, fence: lock.fence, now: now(), error: e.message });
      log.info({ status: 'failed', err: e }, 'simulation failed');
      throw e;
    }
    let checkpoint: EngineCheckpoint | undefined;
    if (stored) {
      checkpoint = JSON.parse(stored.state) as EngineCheckpoint;
      log.info(
        {
          fence: lock.fence,
          checkpoint_fence: Number(stored.fence),
          progress: Number(stored.progress_bp) / 10_000,
          events: Number(stored.events),
        },
        'simulation resuming from a checkpoint',
      );
    }
    return execute(job, lock, log, row, scenario, checkpoint);
  }

  async function execute(
    job: Job<{ simulation_id: string }>,
    lock: SingleRunnerContext,
    log: Logger,
    row: SimulationRow,
    scenario: ResolvedScenario,
    checkpoint: EngineCheckpoint | undefined,
  ) {
    const id = row.id;
    // Compute time already spent, as of the checkpoint we resume from (stored with it).
    const baseElapsedMs = checkpoint ? Number(row.elapsed_ms ?? 0) : 0;
    const t0 = deps.clock.monotonic();
    const elapsedMs = () => Math.round(baseElapsedMs + deps.clock.monotonic() - t0);
    const cancel = new AbortController();
    const signal = AbortSignal.any([lock.signal, cancel.signal]);

    // Durable writes run one at a time, in the order the thread reported them.
    let writes: Promise<void> = Promise.resolve();
    const serially = (fn: () => Promise<void>) => (writes = writes.then(fn));
    let progressPending = false;
    let lastWriteAt = Number.NEGATIVE_INFINITY;
    let lastBp = -1;
    let events = checkpoint?.events ?? 0;

    const onProgress = (p: ThreadProgress): Promise<void> | undefined => {
      events = p.events;
      const bp = Math.min(10_000, Math.floor(p.progress * 10_000));
      const at = deps.clock.monotonic();
      if (progressPending || (at - lastWriteAt < PROGRESS_WRITE_EVERY_MS && bp - lastBp < 100)) return;
      progressPending = true;
      lastWriteAt = at;
      lastBp = bp;
      return serially(async () => {
        try {
          // One round trip: the fenced progress write reads back whether a cancel was asked.
          const r = await recordSimulationProgress(db, { id, fence: lock.fence, progressBp: bp });
          if (!r) throw new StaleFenceError(lock.scope, lock.fence);
          if (r.cancelRequestedAt !== null && !cancel.signal.aborted) {
            log.info({ progress: bp / 10_000 }, 'simulation cancel seen: stopping the run');
            cancel.abort(new SimulationCancelledSignal());
          }
          // BullMQ's copy of the progress is informational: a Redis hiccup must not fail the run.
          await job.updateProgress(Math.floor(bp / 100)).catch(() => undefined);
        } finally {
          progressPending = false;
        }
      });
    };

    const onCheckpoint = (cp: EngineCheckpoint): Promise<void> =>
      serially(async () => {
        const progressBp = Math.min(10_000, Math.floor((cp.finished * 10_000) / scenario.customers));
        const saved = await saveSimulationCheckpoint(db, {
          simulationId: id,
          fence: lock.fence,
          stateJson: JSON.stringify(cp),
          progressBp,
          events: cp.events,
          elapsedMs: elapsedMs(),
          now: now(),
        });
        if (!saved) throw new StaleFenceError(lock.scope, lock.fence);
        log.info(
          { fence: lock.fence, progress: progressBp / 10_000, events: cp.events },
          'simulation checkpoint saved',
        );
      });

    let result;
    try {
      result = await runInThread(scenario, {
        checkpoint,
        onProgress,
        onCheckpoint,
        signal,
        ...(deps.checkpointEveryMs === undefined ? {} : { checkpointEveryMs: deps.checkpointEveryMs }),
      });
      await writes;
    } catch (err) {
      // Let writes already started settle before judging (and before the lock is released).
      await writes.catch(() => undefined);
      if (cancel.signal.aborted && !lock.signal.aborted) {
        await finishCancelled(lock, id, log);
        return { simulation_id: id, status: 'cancelled' };
      }
      const e = toError(err);
      if (e instanceof StaleFenceError || lock.signal.aborted) {
        log.warn(
          { err: e, fence: lock.fence },
          'simulation attempt stopped: lock lost or a newer holder exists',
        );
        throw e;
      }
      if (isFinalAttempt(job)) {
        await failSimulationRun(db, { id, fence: lock.fence, now: now(), error: e.message });
        log.info({ status: 'failed', err: e }, 'simulation failed');
      } else {
        await noteSimulationAttemptError(db, { id, fence: lock.fence, error: e.message });
        log.warn({ err: e, attempt: job.attemptsMade + 1 }, 'simulation attempt failed; it will be retried');
      }
      throw e;
    }

    const elapsed = elapsedMs();
    const completed = await completeSimulationRun(db, {
      id,
      fence: lock.fence,
      now: now(),
      resultJson: JSON.stringify(result),
      elapsedMs: elapsed,
      events,
    });
    if (!completed) throw new StaleFenceError(lock.scope, lock.fence);
    await job.updateProgress(100).catch(() => undefined);
    log.info(
      { scope: lock.scope, fence: lock.fence, status: 'succeeded', elapsed_ms: elapsed, events },
      'simulation succeeded',
    );
    return { simulation_id: id, status: 'succeeded', elapsed_ms: elapsed, events };
  }

  async function finishCancelled(lock: SingleRunnerContext, id: string, log: Logger): Promise<void> {
    if (!(await markSimulationCancelled(db, { id, fence: lock.fence, now: now() }))) {
      throw new StaleFenceError(lock.scope, lock.fence);
    }
    log.info({ scope: lock.scope, fence: lock.fence, status: 'cancelled' }, 'simulation cancelled');
  }

  return { 'run-simulation': runSimulation };
}
