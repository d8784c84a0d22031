import type { Clock } from '../../shared/clock';
import type { Redis } from 'ioredis';
import type { Config } from '../../shared/config';
import type { KeysetAfter } from '../../shared/db/newest-first';
import {
  failBackupRun,
  finishBackupVerification,
  getBackup,
  listUnfinishedBackups,
} from '../../shared/db/backups-store';
import {
  failSimulationRun,
  getSimulation,
  listUnfinishedSimulations,
} from '../../shared/db/simulations-store';
import { simulationJobId } from '../../queues/simulation-producer';
import { failFencedRun } from '../../shared/db/fenced-run';
import { getProbeRun, listUnfinishedManualProbeRuns } from '../../shared/db/probe-runs-store';
import {
  failPruningRun,
  getPruningRun,
  listUnfinishedManualPruningRuns,
} from '../../shared/db/pruning-store';
import { probeRunJobId } from '../../queues/probe-producer';
import { pruneJobId } from '../../queues/pruning-producer';
import type { DatabaseHandle } from '../../shared/db/database';
import { listUndispatchedOutbox, MARK_DISPATCHED_MAX_IDS } from '../../shared/db/outbox-store';
import { DeadlineError } from '../../shared/deadline';
import { isDatabaseUnavailable } from '../../shared/db/unavailable';
import { DependencyUnavailableError, LockBusyError, toError } from '../../shared/errors';
import type { Locks } from '../../shared/locks';
import type { Logger } from '../../shared/logger';
import { backupJobId } from '../../queues/backup-producer';
import { dispatchOutboxRow } from '../../queues/outbox-dispatch';
import { overdueWithoutWorker } from '../../queues/unserved';
import type { Queues } from '../../queues/producer';
import type { JobContext, JobProcessor } from '../registry';
import type { Job } from 'bullmq';

export interface MaintenanceDeps {
  /** Short-command Redis connection: where the reconciler keeps its place between ticks. */
  redis: Redis;
  /** Config REDIS_PREFIX. */
  prefix: string;
  db: DatabaseHandle;
  queues: Queues;
  locks: Locks;
  clock: Clock;
  logger: Logger;
  config: Pick<Config, 'RECONCILE_AFTER_MS' | 'RECONCILE_EVERY_MS'>;
  /** Rows of each kind one reconcile tick checks. @defaultValue RECONCILE_PAGE */
  reconcilePage?: number;
}

/**
 * Rows of each kind one reconcile tick checks (each costs a few Redis round trips). The next
 * tick goes on after the last row checked, so a backlog larger than a page is walked through
 * a page a tick instead of the oldest page being checked again every time.
 */
export const RECONCILE_PAGE = 1000;
/**
 * A place not refreshed for three ticks (and at least an hour) is dropped: ticks stopped (no
 * worker runs maintenance), so the walk starts again from the oldest row when they resume.
 */
function cursorTtlSeconds(everyMs: number): number {
  return Math.max(3600, Math.ceil((3 * everyMs) / 1000));
}

/** The api dispatches right after commit; the relay takes rows left undispatched this long. */
export const RELAY_AFTER_MS = 2_000;
/** One relay batch: its marks fit one UPDATE. */
const BATCH = MARK_DISPATCHED_MAX_IDS;

/**
 * Both jobs run under the `outbox-relay` scope. A tick that finds the scope busy is
 * skipped: another process is already doing exactly this, and the next tick comes soon.
 */
async function singleRunner<T>(
  deps: MaintenanceDeps,
  ctx: JobContext,
  fn: () => Promise<T>,
): Promise<T | { skipped: true }> {
  try {
    return await deps.locks.withSingleRunner('outbox-relay', () => fn(), {
      signal: ctx.signal,
      logLevel: 'debug',
    });
  } catch (err) {
    if (err instanceof LockBusyError) return { skipped: true };
    throw err;
  }
}

export function createMaintenanceProcessors(deps: MaintenanceDeps): Record<string, JobProcessor> {
  const db = deps.db.db;
  const now = () => deps.clock.now().getTime();

  const relayOutbox: JobProcessor = (job, ctx) =>
    singleRunner(deps, ctx, async () => {
      // Each dispatch logs the queue and job_id it enqueues; the tick's own would be the same
      // keys twice in one line, and log pipelines keep only one of them.
      const dispatchLog = deps.logger.child({ component: 'outbox-relay', relay_job_id: job.id });
      let dispatched = 0;
      let failed = 0;
      for (;;) {
        const rows = await listUndispatchedOutbox(db, {
          createdBefore: now() - RELAY_AFTER_MS,
          limit: BATCH,
        });
        if (ctx.signal.aborted) return { dispatched, failed };
        // All at once: the adds share Redis round trips and the marks one UPDATE (a batch is
        // at most MARK_DISPATCHED_MAX_IDS rows). dispatchOutboxRow never throws.
        const outcomes = await Promise.all(
          rows.map((row) =>
            dispatchOutboxRow({ db, queues: deps.queues, clock: deps.clock, logger: dispatchLog }, row),
          ),
        );
        for (const outcome of outcomes) {
          if (outcome === 'dispatched') dispatched++;
          else failed++;
        }
        // A failing row stays undispatched; stop instead of spinning on it in this tick.
        if (rows.length < BATCH || failed > 0) break;
      }
      if (dispatched + failed > 0) ctx.logger.info({ dispatched, failed }, 'outbox relay dispatched rows');
      return { dispatched, failed };
    });

  /**
   * One resource whose job should exist. A missing job is re-enqueued (deterministic id: a
   * no-op if it raced back). A job that failed for good while the resource is still queued
   * or running (the processor could not record it, e.g. it lost its lock on the last
   * attempt) settles the resource as failed, compare-and-set on the fence it holds now.
   *
   * A job that completed while the resource is still queued or running never ran this
   * resource: every processor settles its resource before its job completes, and one that
   * finds no row completes as "missing". That happens when the job id already belonged to a
   * finished job in Redis: after `taskyard restore` of an archive holding unfinished work
   * (the old job is still kept), or when two databases share a REDIS_PREFIX. Its job is
   * removed and added again; the fenced start of each processor still refuses to run a
   * resource twice.
   */
  async function reconcileOne(
    ctx: JobContext,
    r: {
      queue: string;
      jobName: string;
      jobId: string;
      payload: unknown;
      resource: string;
      /** Read again: whether the resource is still queued or running. */
      stillUnfinished: () => Promise<boolean>;
    },
    failStuck: (error: string) => Promise<boolean>,
  ): Promise<'requeued' | 'failed' | 'ok'> {
    const job = await deps.queues.get(r.queue).getJob(r.jobId);
    if (!job) {
      await deps.queues.add(r.queue, r.jobName, r.payload, r.jobId);
      ctx.logger.info(
        { queue: r.queue, job_id: r.jobId, resource: r.resource },
        'reconciler re-enqueued work whose job was gone',
      );
      return 'requeued';
    }
    const state = await job.getState();
    // The resource was listed before the job was read: read it again, so a job that ran and
    // completed in between is not taken for one that never ran it.
    if (state === 'completed' && (await r.stillUnfinished())) {
      await job.remove();
      await deps.queues.add(r.queue, r.jobName, r.payload, r.jobId);
      ctx.logger.info(
        { queue: r.queue, job_id: r.jobId, resource: r.resource },
        'reconciler re-enqueued work whose job had completed without running it',
      );
      return 'requeued';
    }
    // BullMQ leaves a job in `failed` only for good: one with attempts left waits in `delayed`
    // or `wait`. A job can fail for good before its last attempt, too: one that stalled more
    // often than maxStalledCount (its worker was killed twice) fails at once.
    if (state === 'failed') {
      const error = `job failed for good: ${job.failedReason || 'unknown reason'}`;
      if (await failStuck(error)) {
        ctx.logger.info(
          { queue: r.queue, job_id: r.jobId, resource: r.resource, status: 'failed' },
          'reconciler settled work whose job had failed',
        );
        return 'failed';
      }
    }
    return 'ok';
  }

  const unfinished = (status: string | null | undefined) => status === 'queued' || status === 'running';
  const pageSize = deps.reconcilePage ?? RECONCILE_PAGE;

  /**
   * One page of `kind`'s unfinished rows, oldest first, after where the previous tick stopped
   * (kept in Redis, so it holds whichever process runs the next tick). A short page ends the
   * walk: the next tick starts again from the oldest row. A lost place (a Redis wipe) only
   * means starting from the oldest row again.
   */
  async function walkPage<R extends { id: string; created_at: number }>(
    ctx: JobContext,
    kind: string,
    list: (opts: { createdBefore: number; limit: number; after?: KeysetAfter }) => Promise<R[]>,
    visit: (row: R) => Promise<void>,
  ): Promise<void> {
    if (ctx.signal.aborted) return;
    const key = `${deps.prefix}:reconcile:cursor:${kind}`;
    const after = parseCursor(await deps.redis.get(key));
    const rows = await list({
      createdBefore: now() - deps.config.RECONCILE_AFTER_MS,
      limit: pageSize,
      after,
    });
    let errors = 0;
    let firstError: unknown;
    for (const row of rows) {
      // Stopping (a drain, a lost lock): keep the place where it was; the rows are checked again.
      if (ctx.signal.aborted) return;
      try {
        await visit(row);
      } catch (err) {
        // An outage ends the tick with the place kept (the runtime delays the job); skipping
        // would walk past rows it never checked.
        if (isOutage(err)) throw err;
        // One row that cannot be reconciled (a payload the producer refuses, say) must not
        // stop the rows behind it or the other kinds; it is tried again on the next walk.
        errors++;
        firstError ??= err;
      }
    }
    if (errors > 0) {
      ctx.logger.warn(
        { kind, errors, err: toError(firstError) },
        'reconciler could not check some rows; they are tried again on the next walk',
      );
    }
    const last = rows.at(-1);
    if (rows.length < pageSize || !last) await deps.redis.del(key);
    else
      await deps.redis.set(
        key,
        JSON.stringify({ createdAt: Number(last.created_at), id: last.id }),
        'EX',
        cursorTtlSeconds(deps.config.RECONCILE_EVERY_MS),
      );
  }

  const reconcile: JobProcessor = (job, ctx) =>
    singleRunner(deps, ctx, async () => {
      const counts = { checked: 0, requeued: 0, failed: 0 };
      const tally = (o: 'requeued' | 'failed' | 'ok') => {
        counts.checked++;
        if (o !== 'ok') counts[o]++;
      };
      await walkPage(
        ctx,
        'backups',
        (opts) => listUnfinishedBackups(db, opts),
        async (row) => {
          if (row.status === 'queued' || row.status === 'running') {
            tally(
              await reconcileOne(
                ctx,
                {
                  queue: 'backups',
                  jobName: 'create-backup',
                  jobId: backupJobId(row.id),
                  payload: { backup_id: row.id, trigger: row.trigger },
                  resource: `backup:${row.id}`,
                  stillUnfinished: async () => unfinished((await getBackup(db, row.id))?.status),
                },
                async (error) => {
                  const current = await getBackup(db, row.id);
                  return current
                    ? failBackupRun(db, { id: row.id, fence: Number(current.fence), now: now(), error })
                    : false;
                },
              ),
            );
          }
          if ((row.verify_status === 'queued' || row.verify_status === 'running') && row.verify_job_id) {
            const verificationId = row.verify_job_id.slice(`verify-${row.id}-`.length) || row.verify_job_id;
            tally(
              await reconcileOne(
                ctx,
                {
                  queue: 'backups',
                  jobName: 'verify-backup',
                  jobId: row.verify_job_id,
                  payload: { backup_id: row.id, verification_id: verificationId },
                  resource: `backup-verify:${row.id}`,
                  stillUnfinished: async () => {
                    const current = await getBackup(db, row.id);
                    return current?.verify_job_id === row.verify_job_id && unfinished(current.verify_status);
                  },
                },
                async (error) => {
                  const current = await getBackup(db, row.id);
                  if (!current) return false;
                  return finishBackupVerification(db, {
                    id: row.id,
                    fence: Number(current.fence),
                    passed: false,
                    error,
                    now: now(),
                  });
                },
              ),
            );
          }
        },
      );
      await walkPage(
        ctx,
        'simulations',
        (opts) => listUnfinishedSimulations(db, opts),
        async (row) => {
          tally(
            await reconcileOne(
              ctx,
              {
                queue: 'simulations',
                jobName: 'run-simulation',
                jobId: simulationJobId(row.id),
                payload: { simulation_id: row.id },
                resource: `simulation:${row.id}`,
                stillUnfinished: async () => unfinished((await getSimulation(db, row.id))?.status),
              },
              async (error) => {
                const current = await getSimulation(db, row.id);
                return current
                  ? failSimulationRun(db, { id: row.id, fence: Number(current.fence), now: now(), error })
                  : false;
              },
            ),
          );
        },
      );
      // Manual probe and pruning runs (scheduled ones are the scheduler's own ticks: the
      // next tick replaces a lost one).
      await walkPage(
        ctx,
        'probe-runs',
        (opts) => listUnfinishedManualProbeRuns(db, opts),
        async (row) => {
          tally(
            await reconcileOne(
              ctx,
              {
                queue: 'probes',
                jobName: 'probe-cycle',
                jobId: probeRunJobId(row.id),
                payload: { run_id: row.id },
                resource: `probe-run:${row.id}`,
                stillUnfinished: async () => unfinished((await getProbeRun(db, row.id))?.status),
              },
              // Queued too: a cycle whose only attempt failed before it started the run.
              (error) =>
                failFencedRun(db, 'probe_runs', { id: row.id, fence: Number(row.fence), now: now(), error }),
            ),
          );
        },
      );
      await walkPage(
        ctx,
        'pruning-runs',
        (opts) => listUnfinishedManualPruningRuns(db, opts),
        async (row) => {
          tally(
            await reconcileOne(
              ctx,
              {
                queue: 'pruning',
                jobName: 'prune',
                jobId: pruneJobId(row.id),
                payload: { run_id: row.id, dry_run: row.dry_run === 1 },
                resource: `pruning-run:${row.id}`,
                stillUnfinished: async () => unfinished((await getPruningRun(db, row.id))?.status),
              },
              (error) => failPruningRun(db, { id: row.id, fence: Number(row.fence), now: now(), error }),
            ),
          );
        },
      );
      if (counts.requeued + counts.failed > 0) ctx.logger.info(counts, 'reconcile finished');
      return { ...counts, unserved: await warnUnservedQueues(job, ctx) };
    });

  /**
   * Queues whose jobs are overdue (by RECONCILE_AFTER_MS) while no worker listens (see
   * overdueWithoutWorker). A fleet whose every worker was started with `--queues` that leaves
   * a queue out holds that queue's work for ever, and nothing else says so. One warn per
   * queue and tick, for as long as it lasts. (The maintenance queue itself is watched by the
   * schedule sync of every worker that does not serve it: without it, no tick runs here.)
   * @returns the names of the queues warned about
   */
  async function warnUnservedQueues(job: Job, ctx: JobContext): Promise<string[]> {
    const unserved: string[] = [];
    const overdueBefore = now() - deps.config.RECONCILE_AFTER_MS;
    for (const [name, queue] of deps.queues.byName) {
      if (ctx.signal.aborted) break;
      try {
        const waiting = await overdueWithoutWorker(queue, deps.redis, overdueBefore);
        if (waiting === undefined) continue;
        unserved.push(name);
        // deps.logger: the tick's own logger binds `queue` to maintenance already.
        deps.logger.warn(
          { queue: name, waiting, reconcile_job_id: job.id },
          `jobs are overdue in queue ${name} and no worker serves it: start one with \`npm run worker\` (every queue) or \`npm run worker -- --queues ${name}\`; if nothing should run them, pause the queue (Bull Board) or disable its schedule (PUT /v1/schedules/:name)`,
        );
      } catch (err) {
        deps.logger.debug({ queue: name, err: toError(err) }, 'could not count the workers of a queue');
      }
    }
    return unserved;
  }

  return { 'relay-outbox': relayOutbox, reconcile };
}

/** The database or Redis is away: no row can be checked now. */
function isOutage(err: unknown): boolean {
  if (isDatabaseUnavailable(err)) return true;
  if (err instanceof DependencyUnavailableError || err instanceof DeadlineError) return true;
  const e = err as { name?: unknown; message?: unknown };
  return e.name === 'MaxRetriesPerRequestError' || e.message === 'Connection is closed.';
}

/** A stored place → where the walk resumes; anything unreadable starts from the oldest row. */
function parseCursor(text: string | null): KeysetAfter | undefined {
  if (text === null) return undefined;
  try {
    const v = JSON.parse(text) as Partial<KeysetAfter>;
    // A whole number: Postgres refuses anything else for a bigint, every tick.
    if (typeof v.createdAt === 'number' && Number.isSafeInteger(v.createdAt) && typeof v.id === 'string') {
      return { createdAt: v.createdAt, id: v.id };
    }
  } catch {
    // fall through
  }
  return undefined;
}
