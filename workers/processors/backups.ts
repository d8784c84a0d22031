import fs from 'node:fs/promises';
import path from 'node:path';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import { writeBackupArchive } from '../../shared/backup-archive-writer';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import {
  completeBackupRun,
  deleteBackupRow,
  failBackupRun,
  finishBackupVerification,
  getBackup,
  noteBackupAttemptError,
  startBackupRun,
  startBackupVerification,
  succeededBackupsBeyond,
} from '../../shared/db/backups-store';
import type { DatabaseHandle } from '../../shared/db/database';
import { countSucceededBackupsBeyond } from '../../shared/db/pruning-store';
import type { Migration } from '../../shared/db/migrate';
import { verifyBackupArchive } from '../../shared/db/restore';
import { deterministicUuid } from '../../shared/deterministic-uuid';
import { LockBusyError, StaleFenceError, toError } from '../../shared/errors';
import { withFenceRecovery, type Locks, type SingleRunnerContext } from '../../shared/locks';
import type { Logger } from '../../shared/logger';
import type { JobContext, JobProcessor } from '../registry';
import { requestScheduledBackup } from '../../queues/backup-producer';
import type { Queues } from '../../queues/producer';

export interface BackupProcessorDeps {
  db: DatabaseHandle;
  databaseUrl: string;
  locks: Locks;
  config: Pick<Config, 'BACKUP_DIR' | 'BACKUP_KEEP_LAST'>;
  clock: Clock;
  migrations: readonly Migration[];
  queues: Queues;
}

/** A backup that finds the `backups` scope busy waits this long, delayed (not failed), then tries again. */
export const BACKUP_BUSY_DELAY_MS = 2_000;

const fileNameFor = (id: string) => `taskyard-backup-${id}.ndjson.gz`;

/**
 * The single-runner section of a backups job, or a delay when another holds the scope.
 * DESIGN.md §4.3: contention on `backups` delays the job; it never fails it.
 */
async function underBackupsLock<T>(
  deps: BackupProcessorDeps,
  job: Job,
  ctx: JobContext,
  fn: (lock: SingleRunnerContext) => Promise<T>,
): Promise<T> {
  try {
    return await deps.locks.withSingleRunner('backups', fn, { signal: ctx.signal });
  } catch (err) {
    if (err instanceof LockBusyError && ctx.token !== undefined) {
      ctx.logger.info(
        { scope: 'backups', delay_ms: BACKUP_BUSY_DELAY_MS },
        'backups scope busy: job delayed',
      );
      await job.moveToDelayed(Date.now() + BACKUP_BUSY_DELAY_MS, ctx.token);
      throw new DelayedError();
    }
    throw err;
  }
}

/** A fenced start of a backup or its verification, recovering a fencing counter Redis lost. */
async function startFenced(
  attempt: (fence: number) => Promise<'started' | 'terminal' | 'stale-fence' | 'missing' | boolean>,
  lock: SingleRunnerContext,
  storedFence: () => Promise<number>,
): Promise<'started' | 'terminal' | 'missing'> {
  // A boolean start (verification) cannot tell stale from terminal: false counts as stale.
  const r = await withFenceRecovery(lock, attempt, (x) => x === false || x === 'stale-fence', storedFence);
  return r === true ? 'started' : (r as 'started' | 'terminal' | 'missing');
}

const isFinalAttempt = (job: Job) => job.attemptsMade + 1 >= (job.opts.attempts ?? 1);

export function createBackupProcessors(deps: BackupProcessorDeps): Record<string, JobProcessor> {
  const db = deps.db.db;
  const now = () => deps.clock.now().getTime();
  const storedFence = (id: string) => async () => Number((await getBackup(db, id))?.fence ?? 0);

  const createBackup: JobProcessor<{ backup_id?: string; trigger: 'manual' | 'scheduled' }> = async (
    job,
    ctx,
  ) => {
    if (!job.data.backup_id) {
      // A scheduler tick: request the backup (row + outbox, then enqueue) and finish.
      const id = deterministicUuid('taskyard-scheduled-backup', String(job.id));
      await requestScheduledBackup(
        { db, queues: deps.queues, clock: deps.clock, logger: ctx.logger },
        { id },
      );
      return { backup_id: id, requested: true };
    }
    const id = job.data.backup_id;
    const log = ctx.logger.child({ backup_id: id });
    return underBackupsLock(deps, job, ctx, async (lock) => {
      const started = await startFenced(
        (fence) => startBackupRun(db, { id, fence, now: now() }),
        lock,
        storedFence(id),
      );
      if (started !== 'started') {
        log.info({ outcome: started }, 'backup already finished or gone: nothing to do');
        return { backup_id: id, skipped: started };
      }
      log.info({ scope: lock.scope, fence: lock.fence, status: 'running' }, 'backup running');
      try {
        const archive = await writeBackupArchive(deps.databaseUrl, {
          dir: deps.config.BACKUP_DIR,
          fileName: fileNameFor(id),
          signal: lock.signal,
          now,
          onProgress: async (p) => {
            await job.updateProgress({ table: p.table, rows: p.rows });
          },
        });
        const manifest = {
          fileName: path.basename(archive.path),
          sizeBytes: archive.sizeBytes,
          sha256: archive.sha256,
          schemaVersion: archive.schemaVersion,
          rowCounts: archive.rowCounts,
          contentSha256: archive.contentSha256,
        };
        if (!(await completeBackupRun(db, { id, fence: lock.fence, now: now(), manifest }))) {
          // A newer holder owns the row: our archive is not the one it records.
          await fs.rm(archive.path, { force: true });
          throw new StaleFenceError(lock.scope, lock.fence);
        }
        log.info(
          { scope: lock.scope, fence: lock.fence, status: 'succeeded', size_bytes: archive.sizeBytes },
          'backup succeeded',
        );
        await applyBackupRetention(deps, log);
        return { backup_id: id, size_bytes: archive.sizeBytes, sha256: archive.sha256 };
      } catch (err) {
        const e = toError(err);
        if (e instanceof StaleFenceError || lock.signal.aborted) throw e;
        if (isFinalAttempt(job)) {
          await failBackupRun(db, { id, fence: lock.fence, now: now(), error: e.message });
          log.info({ status: 'failed', err: e }, 'backup failed');
        } else {
          await noteBackupAttemptError(db, { id, fence: lock.fence, error: e.message });
          log.warn({ err: e, attempt: job.attemptsMade + 1 }, 'backup attempt failed; it will be retried');
        }
        throw e;
      }
    });
  };

  const verifyBackup: JobProcessor<{ backup_id: string; verification_id: string }> = async (job, ctx) => {
    const id = job.data.backup_id;
    const log = ctx.logger.child({ backup_id: id });
    return underBackupsLock(deps, job, ctx, async (lock) => {
      const started = await startFenced(
        (fence) => startBackupVerification(db, { id, fence }),
        lock,
        storedFence(id),
      );
      if (started !== 'started') return { backup_id: id, skipped: true };
      const row = await getBackup(db, id);
      if (!row?.file_name) {
        await finishBackupVerification(db, {
          id,
          fence: lock.fence,
          passed: false,
          error: 'backup has no archive',
          now: now(),
        });
        throw new UnrecoverableError(`backup ${id} has no archive to verify`);
      }
      log.info(
        { scope: lock.scope, fence: lock.fence, verify_status: 'running' },
        'backup verification running',
      );
      const file = path.join(deps.config.BACKUP_DIR, path.basename(row.file_name));
      const outcome = await verifyBackupArchive(file, {
        migrations: deps.migrations,
        expectedSha256: row.sha256 ?? undefined,
        signal: lock.signal,
      }).catch((err: unknown) => ({
        ok: false as const,
        problem: 'io',
        detail:
          (err as NodeJS.ErrnoException).code === 'ENOENT'
            ? `the archive ${path.basename(file)} is no longer on disk (pruned or moved)`
            : toError(err).message,
      }));
      const expectedCounts = row.row_counts ?? '{}';
      const countsMatch =
        outcome.ok &&
        JSON.stringify(sortKeys(outcome.rowCounts)) === JSON.stringify(sortKeys(JSON.parse(expectedCounts)));
      const passed = outcome.ok && countsMatch;
      const error = outcome.ok
        ? countsMatch
          ? null
          : 'restored row counts differ from the manifest'
        : outcome.detail;
      await finishBackupVerification(db, { id, fence: lock.fence, passed, error, now: now() });
      log.info({ verify_status: passed ? 'passed' : 'failed', error }, 'backup verification finished');
      return { backup_id: id, passed };
    });
  };

  return { 'create-backup': createBackup, 'verify-backup': verifyBackup };
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * Keep the newest BACKUP_KEEP_LAST succeeded backups. Runs under the `backups` lock, so no
 * archive is being written meanwhile. The file goes first, then the row: a crash between them
 * leaves a row whose archive is gone (download says so, and the next run deletes the row),
 * never a file without a row. Files are only ever deleted through a row of this database:
 * BACKUP_DIR may hold archives of another install (a database switched to Postgres, a restore
 * into a new database), and those are not this database's to delete. Also used by the prune
 * job, which takes the `backups` lock for it.
 * @param opts.dryRun count what would go, delete nothing. @defaultValue false
 * @returns backup rows deleted, and how many of them still had their archive on disk
 */
export async function applyBackupRetention(
  deps: { db: DatabaseHandle; config: Pick<Config, 'BACKUP_DIR' | 'BACKUP_KEEP_LAST'> },
  log: Logger,
  opts: { dryRun?: boolean; signal?: AbortSignal } = {},
): Promise<{ backups: number; files: number }> {
  const db = deps.db.db;
  const dir = deps.config.BACKUP_DIR;
  let backups = 0;
  let files = 0;
  const fileOf = (fileName: string | null) => (fileName ? path.join(dir, path.basename(fileName)) : null);
  if (opts.dryRun) {
    backups = await countSucceededBackupsBeyond(db, deps.config.BACKUP_KEEP_LAST);
    // Files of the first page only (1000 rows): a dry run reports, it need not be exact beyond.
    for (const row of await succeededBackupsBeyond(db, deps.config.BACKUP_KEEP_LAST)) {
      const file = row.imported_at === null ? fileOf(row.file_name) : null;
      if (file && (await exists(file))) files++;
    }
    return { backups, files };
  }
  for (;;) {
    const rows = await succeededBackupsBeyond(db, deps.config.BACKUP_KEEP_LAST);
    for (const row of rows) {
      opts.signal?.throwIfAborted();
      // A restored row's file is the source install's archive, which that install still lists.
      const file = row.imported_at === null ? fileOf(row.file_name) : null;
      if (file && (await removeIfPresent(file))) files++;
      await deleteBackupRow(db, row.id);
      backups++;
      log.info(
        { deleted_backup_id: row.id, status: 'deleted', archive_kept: row.imported_at !== null },
        row.imported_at === null
          ? 'backup removed by retention'
          : 'restored backup row removed by retention; its archive belongs to the install it was restored from and is kept',
      );
    }
    if (rows.length === 0) break;
  }
  return { backups, files };
}

/** Delete a file; false when it was already gone (one call, not a check and a delete). */
async function removeIfPresent(file: string): Promise<boolean> {
  return fs.rm(file).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
