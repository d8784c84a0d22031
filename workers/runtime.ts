import { DelayedError, UnrecoverableError, WaitingError, Worker, type Job, type WorkerOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { QueueDefinition } from '../queues/definition';
import type { Clock } from '../shared/clock';
import { queueConcurrency, type Config, type QueueConcurrency } from '../shared/config';
import { isDatabaseUnavailable } from '../shared/db/unavailable';
import { UnknownJobError } from '../shared/errors';
import { createLifecycle, type Lifecycle } from '../shared/lifecycle';
import { containListener, type Logger } from '../shared/logger';
import { createRedis } from '../shared/redis';
import type { JobContext, JobProcessor, ProcessorRegistry } from './registry';

/**
 * The worker runtime: one BullMQ `Worker` per consumed queue, behind the common lifecycle
 * (shared/lifecycle.ts, DESIGN.md §4.4).
 *
 * - start(): one Redis connection and one Worker per queue (created per run, so a cleanly
 *   stopped runtime can start again), ready before intake begins.
 * - stop(): `worker.close()` stops fetching and waits for active jobs: that is the drain.
 * - After the drain timeout: every active job's AbortSignal fires; a job that ends while
 *   force-closing is put straight back into its queue (`moveToWait`, no attempt spent).
 *   A job that never ends, or a process that dies, is recovered by BullMQ's stalled-job
 *   check in another worker once its lock (lockDuration, 30 s) lapses. Nothing is lost.
 * - Every job is checked before its processor runs: an unknown job name or a payload its
 *   queue's zod schema rejects fails that job alone, without retries (UnrecoverableError).
 */

export interface WorkerRuntimeOptions {
  config: Config;
  logger: Logger;
  /** Queues to consume. A queue with no registered processors is skipped (and logged), not consumed. */
  queues: readonly QueueDefinition[];
  registry: ProcessorRegistry;
  /** @defaultValue config.REDIS_URL */
  redisUrl?: string;
  /** BullMQ key prefix. @defaultValue config.REDIS_PREFIX */
  prefix?: string;
  /** Concurrent jobs per queue in this process. @defaultValue queueConcurrency(config) (1 for a queue it does not name) */
  concurrency?: QueueConcurrency;
  /** @defaultValue config.DRAIN_TIMEOUT_MS */
  drainTimeoutMs?: number;
  /** Extra BullMQ Worker options (e.g. a short stalledInterval in tests). connection, prefix, concurrency and autorun are the runtime's. */
  workerOptions?: Partial<WorkerOptions>;
  clock?: Clock;
}

export interface WorkerRuntime extends Lifecycle {
  /**
   * The BullMQ Workers of the current run; empty before the first start. Their `cancelJob` and
   * `cancelAllJobs` abort nothing: the runtime, not BullMQ, owns the jobs' signals.
   */
  readonly workers: readonly Worker[];
  /** Names of the queues this runtime consumes (those with processors). */
  readonly queueNames: readonly string[];
}

/** How long force-closing waits for aborted jobs to hand their work back. A deadline only. */
const FORCE_CLOSE_GRACE_MS = 2_000;

/**
 * Build the runtime; nothing connects until start().
 * @throws Error when the registry names a job its queue does not declare (a programming error).
 */
export function createWorkerRuntime(opts: WorkerRuntimeOptions): WorkerRuntime {
  const { config, logger, registry } = opts;
  const redisUrl = opts.redisUrl ?? config.REDIS_URL;
  const prefix = opts.prefix ?? config.REDIS_PREFIX;
  const concurrency = opts.concurrency ?? queueConcurrency(config);
  const drainTimeoutMs = opts.drainTimeoutMs ?? config.DRAIN_TIMEOUT_MS;

  const consumed: Array<{ def: QueueDefinition; processors: ReadonlyMap<string, JobProcessor> }> = [];
  for (const def of opts.queues) {
    const processors = registry.get(def.name);
    if (processors === undefined || processors.size === 0) {
      // Consuming it would fail every job unrecoverably; leave its jobs for a worker that can run them.
      logger.warn(
        { queue: def.name },
        `queue "${def.name}" has no processors in this worker: not consuming it`,
      );
      continue;
    }
    const undeclared = [...processors.keys()].filter((name) => !Object.hasOwn(def.jobs, name));
    if (undeclared.length > 0) {
      throw new Error(
        `processors for undeclared job(s) ${undeclared.join(', ')} on queue "${def.name}"; it declares: ${Object.keys(def.jobs).join(', ')}`,
      );
    }
    consumed.push({ def, processors });
  }

  let workers: Worker[] = [];
  // Set when force-closing: a job that ends now is handed back to its queue instead of failing.
  let forcing = false;
  let signals = new JobSignals();

  const lifecycle = createLifecycle(
    {
      name: 'worker-runtime',
      async start({ onCleanup }) {
        forcing = false;
        signals = new JobSignals();
        const started: Worker[] = [];
        workers = started;
        for (const { def, processors } of consumed) {
          const queueLogger = logger.child({ queue: def.name });
          const connection = createRedis(redisUrl, 'worker', {
            connectionName: `${prefix}:worker:${def.name}`,
          });
          onCleanup(() => closeRedis(connection));
          const worker = new Worker(
            def.name,
            makeProcessor(def, processors, queueLogger, () => forcing, signals),
            {
              lockDuration: config.WORKER_LOCK_DURATION_MS,
              stalledInterval: config.WORKER_STALLED_INTERVAL_MS,
              ...opts.workerOptions,
              connection,
              prefix,
              concurrency: concurrency[def.name] ?? 1,
              autorun: false,
            },
          );
          onCleanup(() => worker.close());
          watch(worker, queueLogger, def.jobLogLevel ?? 'info');
          started.push(worker);
        }
        await Promise.all(started.map((w) => w.waitUntilReady()));
        for (const worker of started) {
          worker
            .run()
            .catch((err: unknown) => logger.error({ err, queue: worker.name }, 'worker main loop failed'));
        }
      },
      async drain() {
        // close() stops fetching at once, then waits for the active jobs.
        await Promise.all(workers.map((w) => w.close()));
      },
      async forceClose() {
        forcing = true;
        signals.abortAll(new Error('worker force-closing after the drain timeout'));
        const closed = Promise.all(workers.map((w) => w.close()));
        const settled = await withinDeadline(closed, FORCE_CLOSE_GRACE_MS);
        if (!settled) {
          logger.error(
            { grace_ms: FORCE_CLOSE_GRACE_MS },
            'jobs ignored their abort signal: leaving them to stalled-job recovery',
          );
        }
      },
    },
    { drainTimeoutMs, logger, clock: opts.clock },
  );

  return {
    get state() {
      return lifecycle.state;
    },
    start: lifecycle.start,
    stop: lifecycle.stop,
    get workers() {
      return workers;
    },
    queueNames: Object.freeze(consumed.map((c) => c.def.name)),
  };
}

/**
 * The abort signals handed to running jobs, so force-closing can abort them. A signal is made
 * when a processor first reads `ctx.signal`, not per job: building an AbortSignal costs ~2.5 µs
 * and leaves garbage behind, and doing so for every job was most of what the runtime added to a
 * no-op job (0.89 of raw BullMQ with it, 0.99–1.00 without; bench/RESULTS.md). A processor that
 * never reads the signal could not react to it anyway. BullMQ makes one eagerly for a processor that
 * declares a third parameter, which is why ours declares two.
 */
class JobSignals {
  private readonly live = new Set<AbortController>();
  private abortedWith: unknown;
  private aborting = false;

  /** A signal for one job; already aborted when force-closing has begun. */
  create(): AbortController {
    const controller = new AbortController();
    if (this.aborting) controller.abort(this.abortedWith);
    else this.live.add(controller);
    return controller;
  }

  /** The job has ended: its signal, if it has one, no longer needs aborting. */
  release(ctx: RuntimeJobContext): void {
    ctx.ended = true;
    if (ctx.controller !== undefined) this.live.delete(ctx.controller);
  }

  abortAll(reason: unknown): void {
    this.aborting = true;
    this.abortedWith = reason;
    for (const c of this.live) c.abort(reason);
    this.live.clear();
  }
}

/** What a processor gets besides its job; its signal and logger are made on first use. */
class RuntimeJobContext implements JobContext {
  controller: AbortController | undefined;
  /** Set when the job has ended; a signal first read after that is not tracked (nothing would release it). */
  ended = false;
  private child: Logger | undefined;

  constructor(
    private readonly job: Job,
    readonly token: string | undefined,
    private readonly queueLogger: Logger,
    private readonly signals: JobSignals,
  ) {}

  get signal(): AbortSignal {
    return (this.controller ??= this.ended ? new AbortController() : this.signals.create()).signal;
  }

  get logger(): Logger {
    return (this.child ??= this.queueLogger.child({ job_id: this.job.id, job_name: this.job.name }));
  }
}

/** The BullMQ processor of one queue. */
function makeProcessor(
  def: QueueDefinition,
  processors: ReadonlyMap<string, JobProcessor>,
  queueLogger: Logger,
  forcing: () => boolean,
  signals: JobSignals,
) {
  const known = [...processors.keys()];
  // Declared processors always have a schema (checked at construction).
  const schemas = new Map(known.map((name) => [name, def.jobs[name]!]));
  return async (job: Job, token: string | undefined): Promise<unknown> => {
    const fn = processors.get(job.name);
    const schema = schemas.get(job.name);
    if (fn === undefined || schema === undefined) {
      throw new UnrecoverableError(new UnknownJobError(def.name, job.name, known).message);
    }
    const parsed = schema.safeParse(job.data);
    if (!parsed.success) {
      const issues = parsed.error.issues
        .map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`)
        .join('; ');
      throw new UnrecoverableError(`invalid payload for job "${job.name}" on queue "${def.name}": ${issues}`);
    }
    job.data = parsed.data;
    const ctx = new RuntimeJobContext(job, token, queueLogger, signals);
    try {
      return await fn(job, ctx);
    } catch (err) {
      if (forcing() && token !== undefined) {
        // Interrupted by the force close: hand the job back now rather than spend an attempt
        // (WaitingError tells BullMQ the job was moved already). If this fails, the stalled
        // check recovers the job once its lock lapses.
        await job.moveToWait(token);
        queueLogger.warn(
          { job_id: job.id, job_name: job.name },
          'job interrupted by shutdown: returned to the queue',
        );
        throw new WaitingError();
      }
      // The database is down or refusing connections: the job did nothing wrong. Accepted
      // work waits the outage out instead of spending its attempts (a 30 s outage used to
      // fail simulations that had never started). A scheduler's tick is not delayed: the
      // next tick replaces it, and delayed ticks would pile up for as long as the outage.
      if (token !== undefined && job.repeatJobKey === undefined && isDatabaseUnavailable(err)) {
        await job.moveToDelayed(Date.now() + DATABASE_UNAVAILABLE_DELAY_MS, token);
        queueLogger.warn(
          {
            job_id: job.id,
            job_name: job.name,
            delay_ms: DATABASE_UNAVAILABLE_DELAY_MS,
            err: { message: err instanceof Error ? err.message : String(err) },
          },
          'database unavailable: job delayed without spending an attempt',
        );
        throw new DelayedError();
      }
      throw err;
    } finally {
      signals.release(ctx);
    }
  };
}

/** How long a job waits before it tries again when the database could not serve it. */
export const DATABASE_UNAVAILABLE_DELAY_MS = 5_000;

/**
 * Log job transitions, and worker trouble; listeners never throw.
 *
 * Per job: `job completed` at the queue's `jobLogLevel` (info for the domain queues, debug
 * for the maintenance ticks and the test-only noop queue), `job failed` always at info,
 * `job active` at debug. An info line costs a few µs of main-thread time with pino, 5–10 %
 * of a no-op job's throughput (bench/RESULTS.md shows the runtime both ways), and the relay's tick every 2 s
 * would otherwise log 43,200 lines a day saying nothing. The start of a run is carried in
 * the completed line (run_ms). These lines go through a child without redaction (fixed,
 * secret-free fields); lines that carry an error keep the redacting logger.
 */
function watch(worker: Worker, log: Logger, completedLevel: 'info' | 'debug'): void {
  const transitions = log.child({}, { redact: { paths: [] } });
  // No listener for a level that is off: it would still run, and build its line, per job.
  if (transitions.isLevelEnabled('debug')) {
    worker.on(
      'active',
      containListener(log, 'active', (job: Job) => {
        transitions.debug(
          { job_id: job.id, job_name: job.name, attempt: job.attemptsMade + 1 },
          'job active',
        );
      }),
    );
  }
  if (transitions.isLevelEnabled(completedLevel)) {
    worker.on(
      'completed',
      containListener(log, 'completed', (job: Job) => {
        transitions[completedLevel](
          {
            job_id: job.id,
            job_name: job.name,
            attempts_made: job.attemptsMade,
            run_ms: job.finishedOn && job.processedOn ? job.finishedOn - job.processedOn : undefined,
          },
          'job completed',
        );
      }),
    );
  }
  worker.on(
    'failed',
    containListener(log, 'failed', (job: Job | undefined, err: Error) => {
      log.info(
        {
          job_id: job?.id,
          job_name: job?.name,
          attempts_made: job?.attemptsMade,
          max_attempts: job?.opts.attempts ?? 1,
          err,
        },
        'job failed',
      );
    }),
  );
  worker.on(
    'stalled',
    containListener(log, 'stalled', (jobId: string) => {
      log.warn({ job_id: jobId }, 'stalled job moved back to the queue');
    }),
  );
  worker.on(
    'lockRenewalFailed',
    containListener(log, 'lockRenewalFailed', (jobIds: string[]) => {
      log.warn({ job_ids: jobIds }, 'job lock renewal failed');
    }),
  );
  worker.on(
    'error',
    containListener(log, 'error', (err: Error) => {
      log.error({ err }, 'worker error');
    }),
  );
}

/** Close a connection without hanging on a dead socket. */
async function closeRedis(connection: Redis): Promise<void> {
  if (connection.status === 'end') return;
  if (connection.status === 'ready') {
    try {
      await connection.quit();
      return;
    } catch {
      // fall through to a hard disconnect
    }
  }
  connection.disconnect();
}

/** Whether `promise` settled within `ms`. The timer is a deadline only. */
async function withinDeadline(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), deadline]);
  } finally {
    clearTimeout(timer);
  }
}
