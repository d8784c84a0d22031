import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import { failAbandonedRuns } from '../../shared/db/fenced-run';
import { parseProviderHeaders } from '../../shared/contract/providers';
import type { DatabaseHandle } from '../../shared/db/database';
import {
  finishProbeRun,
  getProbeRun,
  insertProbeRunIfAbsent,
  skipProbeRun,
  startProbeRun,
} from '../../shared/db/probe-runs-store';
import {
  listEnabledProviders,
  maxProviderFence,
  recordProbeOutcomes,
  type ProbeOutcome,
  type ProviderRow,
} from '../../shared/db/providers-store';
import { LockBusyError, StaleFenceError, toError } from '../../shared/errors';
import { probeHttp, type ProbeResult, type ProbeTarget } from '../../shared/http-probe';
import type { Locks, SingleRunnerContext } from '../../shared/locks';
import type { Logger } from '../../shared/logger';
import { nextProviderState } from '../../shared/probe-state';
import { scheduledProbeRunId } from '../../queues/probe-producer';
import type { JobProcessor } from '../registry';

export interface ProbeProcessorDeps {
  db: DatabaseHandle;
  locks: Locks;
  config: Pick<Config, 'PROBE_CONCURRENCY' | 'DOWN_AFTER' | 'RECOVER_AFTER'>;
  clock: Clock;
  /** One probe; the real HTTP probe unless a test injects another. @defaultValue probeHttp */
  probe?: (
    target: ProbeTarget,
    opts: { signal?: AbortSignal; monotonic?: () => number },
  ) => Promise<ProbeResult>;
}

export interface ProbeCycleResult {
  run_id: string;
  /** `skipped`: the scope was busy; `terminal`/`missing`: the run had already ended or is gone. */
  outcome: 'succeeded' | 'skipped' | 'terminal' | 'missing';
  probed: number;
  failed: number;
}

/** Outcomes are written in transactions of at most this many providers, as probes finish. */
const WRITE_BATCH = 200;
const SCOPE = 'probes';

/**
 * One probe cycle (issue 5; DESIGN.md §4.3): under the `probes` scope, probe every enabled
 * provider concurrently (at most PROBE_CONCURRENCY at once, each with its own deadline),
 * store a sample per provider and move its state with the pure state machine, all fenced on
 * the scope's token. A cycle that finds the scope held never waits: its run is `skipped`.
 */
export async function runProbeCycle(
  deps: ProbeProcessorDeps,
  input: { runId: string; trigger: 'manual' | 'scheduled'; logger: Logger; signal?: AbortSignal },
): Promise<ProbeCycleResult> {
  const db = deps.db.db;
  const now = () => deps.clock.now().getTime();
  const log = input.logger.child({ probe_run_id: input.runId });
  if (input.trigger === 'scheduled') {
    await insertProbeRunIfAbsent(db, { id: input.runId, trigger: 'scheduled', now: now() });
  }
  try {
    return await deps.locks.withSingleRunner(SCOPE, (lock) => cycleUnderLock(deps, input.runId, lock, log), {
      signal: input.signal,
    });
  } catch (err) {
    if (!(err instanceof LockBusyError)) throw err;
    await skipProbeRun(db, { id: input.runId, now: now() });
    log.info(
      { scope: SCOPE, status: 'skipped' },
      'probe cycle skipped: another cycle holds the probes scope',
    );
    return { run_id: input.runId, outcome: 'skipped', probed: 0, failed: 0 };
  }
}

async function cycleUnderLock(
  deps: ProbeProcessorDeps,
  runId: string,
  lock: SingleRunnerContext,
  log: Logger,
): Promise<ProbeCycleResult> {
  const db = deps.db.db;
  const now = () => deps.clock.now().getTime();
  // A provider fenced above our token while we hold the lock means Redis lost its counter.
  const stored = Math.max(await maxProviderFence(db), Number((await getProbeRun(db, runId))?.fence ?? 0));
  // Equal counts too: a start takes a fresh token, so an equal stored one predates a reset.
  if (stored >= lock.fence) await lock.advanceFencePast(stored);
  const started = await startProbeRun(db, { id: runId, fence: lock.fence, now: now() });
  if (started === 'stale-fence') throw new StaleFenceError(SCOPE, lock.fence);
  if (started !== 'started') {
    log.info({ outcome: started }, 'probe run already finished or gone: nothing to do');
    return { run_id: runId, outcome: started, probed: 0, failed: 0 };
  }
  log.info({ scope: SCOPE, fence: lock.fence, status: 'running' }, 'probe run running');
  await failAbandonedRuns(db, 'probe_runs', { exceptId: runId, fence: lock.fence, now: now() }, log);

  try {
    const providers = await listEnabledProviders(db);
    const { probed, failed } = await probeAll(deps, providers, runId, lock, log);
    if (
      !(await finishProbeRun(db, {
        id: runId,
        fence: lock.fence,
        now: now(),
        status: 'succeeded',
        probed,
        failed,
        error: null,
      }))
    ) {
      throw new StaleFenceError(SCOPE, lock.fence);
    }
    log.info({ scope: SCOPE, fence: lock.fence, status: 'succeeded', probed, failed }, 'probe run succeeded');
    return { run_id: runId, outcome: 'succeeded', probed, failed };
  } catch (err) {
    const e = toError(err);
    if (e instanceof StaleFenceError || lock.signal.aborted) throw e;
    await finishProbeRun(db, {
      id: runId,
      fence: lock.fence,
      now: now(),
      status: 'failed',
      probed: 0,
      failed: 0,
      error: e.message,
    }).catch(() => false);
    log.info({ status: 'failed', err: e }, 'probe run failed');
    throw e;
  }
}

/**
 * Probe every provider with at most PROBE_CONCURRENCY in flight. Outcomes are written in
 * batches while later probes still run, one batch at a time; a failed write stops the cycle.
 */
async function probeAll(
  deps: ProbeProcessorDeps,
  providers: readonly ProviderRow[],
  runId: string,
  lock: SingleRunnerContext,
  log: Logger,
): Promise<{ probed: number; failed: number }> {
  const db = deps.db.db;
  const probe = deps.probe ?? probeHttp;
  const thresholds = { downAfter: deps.config.DOWN_AFTER, recoverAfter: deps.config.RECOVER_AFTER };
  const stop = new AbortController();
  const signal = AbortSignal.any([lock.signal, stop.signal]);
  let probed = 0;
  let failed = 0;
  let writeError: unknown;
  let buffer: ProbeOutcome[] = [];
  let writing: Promise<void> = Promise.resolve();

  const write = async (batch: ProbeOutcome[]) => {
    if (writeError !== undefined || batch.length === 0) return;
    try {
      const { recorded } = await recordProbeOutcomes(db, lock.fence, batch);
      const byId = new Map(batch.map((o) => [o.providerId, o]));
      for (const id of recorded) {
        const o = byId.get(id)!;
        probed += 1;
        if (!o.ok) failed += 1;
        if (o.next.transition) {
          log.info(
            {
              provider_id: id,
              from: o.next.transition.from,
              to: o.next.transition.to,
              scope: SCOPE,
              fence: lock.fence,
            },
            'provider state changed',
          );
        }
      }
    } catch (err) {
      writeError = err;
      stop.abort(err);
    }
  };
  const flush = () => {
    const batch = buffer;
    buffer = [];
    writing = writing.then(() => write(batch));
  };

  const probeOne = async (p: ProviderRow) => {
    const result = await probe(
      {
        url: p.url,
        method: p.method,
        expectedStatus: { min: Number(p.expected_status_min), max: Number(p.expected_status_max) },
        timeoutMs: Number(p.timeout_ms),
        headers: parseProviderHeaders(p.headers),
      },
      { signal, monotonic: () => deps.clock.monotonic() },
    );
    // Stopped early (lock lost, a failed write): this probe says nothing about the provider.
    if (signal.aborted) return;
    const next = nextProviderState(
      {
        state: p.state,
        consecutiveFailures: Number(p.consecutive_failures),
        consecutiveSuccesses: Number(p.consecutive_successes),
      },
      result.ok,
      thresholds,
    );
    buffer.push({
      providerId: p.id,
      runId,
      checkedAt: deps.clock.now().getTime(),
      ok: result.ok,
      statusCode: result.statusCode,
      latencyMs: result.latencyMs,
      errorClass: result.errorClass,
      next,
    });
    if (buffer.length >= WRITE_BATCH) flush();
  };

  let nextIndex = 0;
  const lanes = Array.from(
    { length: Math.min(deps.config.PROBE_CONCURRENCY, providers.length) },
    async () => {
      while (nextIndex < providers.length && !signal.aborted) {
        const p = providers[nextIndex++]!;
        await probeOne(p);
      }
    },
  );
  await Promise.all(lanes);
  flush();
  await writing;
  if (writeError !== undefined) throw toError(writeError);
  lock.signal.throwIfAborted();
  return { probed, failed };
}

export function createProbeProcessors(deps: ProbeProcessorDeps): Record<string, JobProcessor> {
  const probeCycle: JobProcessor<{ run_id?: string }> = (job, ctx) =>
    runProbeCycle(deps, {
      runId: job.data.run_id ?? scheduledProbeRunId(String(job.id)),
      trigger: job.data.run_id ? 'manual' : 'scheduled',
      logger: ctx.logger,
      signal: ctx.signal,
    });
  return { 'probe-cycle': probeCycle };
}
