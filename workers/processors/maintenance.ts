import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import { listUnfinishedBackups } from '../../shared/db/backups-store';
import type { DatabaseHandle } from '../../shared/db/database';
import { listUndispatchedOutbox } from '../../shared/db/outbox-store';
import { LockBusyError } from '../../shared/errors';
import type { Locks } from '../../shared/locks';
import type { Logger } from '../../shared/logger';
import { backupJobId } from '../../queues/backup-producer';
import { dispatchOutboxRow } from '../../queues/outbox-dispatch';
import type { Queues } from '../../queues/producer';
import type { JobContext, JobProcessor } from '../registry';

export interface MaintenanceDeps {
  db: DatabaseHandle;
  queues: Queues;
  locks: Locks;
  clock: Clock;
  logger: Logger;
  config: Pick<Config, 'RECONCILE_AFTER_MS'>;
}

/** The api dispatches right after commit; the relay takes rows left undispatched this long. */
export const RELAY_AFTER_MS = 2_000;
const BATCH = 500;

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
    return await deps.locks.withSingleRunner('outbox-relay', () => fn(), { signal: ctx.signal });
  } catch (err) {
    if (err instanceof LockBusyError) return { skipped: true };
    throw err;
  }
}

export function createMaintenanceProcessors(deps: MaintenanceDeps): Record<string, JobProcessor> {
  const db = deps.db.db;
  const now = () => deps.clock.now().getTime();

  const relayOutbox: JobProcessor = (_job, ctx) =>
    singleRunner(deps, ctx, async () => {
      let dispatched = 0;
      let failed = 0;
      for (;;) {
        const rows = await listUndispatchedOutbox(db, {
          createdBefore: now() - RELAY_AFTER_MS,
          limit: BATCH,
        });
        for (const row of rows) {
          if (ctx.signal.aborted) return { dispatched, failed };
          if (
            await dispatchOutboxRow({ db, queues: deps.queues, clock: deps.clock, logger: ctx.logger }, row)
          )
            dispatched++;
          else failed++;
        }
        // A failing row stays undispatched; stop instead of spinning on it in this tick.
        if (rows.length < BATCH || failed > 0) break;
      }
      if (dispatched + failed > 0) ctx.logger.info({ dispatched, failed }, 'outbox relay dispatched rows');
      return { dispatched, failed };
    });

  const reconcile: JobProcessor = (_job, ctx) =>
    singleRunner(deps, ctx, async () => {
      const backups = deps.queues.get('backups');
      let requeued = 0;
      const rows = await listUnfinishedBackups(db, {
        createdBefore: now() - deps.config.RECONCILE_AFTER_MS,
        limit: 1000,
      });
      for (const row of rows) {
        if (row.status === 'queued' || row.status === 'running') {
          const jobId = backupJobId(row.id);
          if (!(await backups.getJob(jobId))) {
            await deps.queues.add(
              'backups',
              'create-backup',
              { backup_id: row.id, trigger: row.trigger },
              jobId,
            );
            ctx.logger.info(
              { backup_id: row.id, job_id: jobId, status: row.status },
              'reconciler re-enqueued a backup whose job was gone',
            );
            requeued++;
          }
        }
        if ((row.verify_status === 'queued' || row.verify_status === 'running') && row.verify_job_id) {
          if (!(await backups.getJob(row.verify_job_id))) {
            const verificationId = row.verify_job_id.slice(`verify-${row.id}-`.length) || row.verify_job_id;
            await deps.queues.add(
              'backups',
              'verify-backup',
              { backup_id: row.id, verification_id: verificationId },
              row.verify_job_id,
            );
            ctx.logger.info(
              { backup_id: row.id, job_id: row.verify_job_id },
              'reconciler re-enqueued a verification whose job was gone',
            );
            requeued++;
          }
        }
      }
      return { checked: rows.length, requeued };
    });

  return { 'relay-outbox': relayOutbox, reconcile };
}
