import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Clock } from '../shared/clock';
import { getBackup, insertBackup, insertBackupIfAbsent, type BackupRow } from '../shared/db/backups-store';
import type { StoredResponse } from '../shared/db/idempotency-store';
import { insertOutboxRow, type OutboxRow } from '../shared/db/outbox-store';
import type { Database } from '../shared/db/schema';
import { ConflictError, NotFoundError } from '../shared/errors';
import type { Logger } from '../shared/logger';
import { dispatchOutboxRow } from './outbox-dispatch';
import type { Queues } from './producer';
import { groupCommit } from '../shared/db/group-commit';

export interface ProducerDeps {
  db: Kysely<Database>;
  queues: Queues;
  clock: Clock;
  logger: Logger;
  /** Fault point between commit and enqueue (tests only; no-op by default). */
  afterCommit?: () => void | Promise<void>;
}

/** Completes an idempotency claim inside the resource's transaction (api/middleware/idempotency). */
export interface ClaimCompleter {
  complete(trx: Kysely<Database>, response: StoredResponse): Promise<void>;
}

export { backupJobId, verifyJobId } from '../shared/contract/job-ids';
import { backupJobId, verifyJobId } from '../shared/contract/job-ids';

/**
 * DESIGN.md §3 steps 4–5: one transaction writes the backup (queued), its outbox row and
 * the completed idempotency record; after commit the job is enqueued. An enqueue failure
 * does not fail the request: the relay dispatches the row later.
 */
export async function requestBackup(
  deps: ProducerDeps,
  input: { label: string | null; claim?: ClaimCompleter; respond: (row: BackupRow) => StoredResponse },
): Promise<{ row: BackupRow; response: StoredResponse }> {
  const id = randomUUID();
  const now = deps.clock.now().getTime();
  const { row, response, outbox } = await groupCommit(deps.db, async (trx) => {
    const row = await insertBackup(trx, { id, label: input.label, trigger: 'manual', now });
    const outbox = await insertOutboxRow(trx, {
      queue: 'backups',
      jobName: 'create-backup',
      jobId: backupJobId(id),
      payload: { backup_id: id, trigger: 'manual' },
      now,
    });
    const response = input.respond(row);
    await input.claim?.complete(trx, response);
    return { row, response, outbox };
  });
  deps.logger.info({ backup_id: id, status: 'queued' }, 'backup requested');
  await afterCommitDispatch(deps, outbox);
  return { row, response };
}

/**
 * A scheduler tick asks for a backup the way the api does, so every backup runs as
 * `backup-<id>` and the reconciler can find its job. The id is derived from the tick's job
 * id, so a retried tick requests the same backup.
 */
export async function requestScheduledBackup(deps: ProducerDeps, input: { id: string }): Promise<void> {
  const now = deps.clock.now().getTime();
  const outbox = await groupCommit(deps.db, async (trx) => {
    const inserted = await insertBackupIfAbsent(trx, {
      id: input.id,
      label: null,
      trigger: 'scheduled',
      now,
    });
    if (!inserted) return undefined;
    return insertOutboxRow(trx, {
      queue: 'backups',
      jobName: 'create-backup',
      jobId: backupJobId(input.id),
      payload: { backup_id: input.id, trigger: 'scheduled' },
      now,
    });
  });
  if (!outbox) return;
  deps.logger.info(
    { backup_id: input.id, status: 'queued', trigger: 'scheduled' },
    'scheduled backup requested',
  );
  await dispatchOutboxRow(deps, outbox);
}

/** Queue a restore drill of a succeeded backup. */
export async function requestBackupVerification(
  deps: ProducerDeps,
  input: { backupId: string; claim?: ClaimCompleter; respond: (row: BackupRow) => StoredResponse },
): Promise<{ row: BackupRow; response: StoredResponse }> {
  const verificationId = randomUUID();
  const now = deps.clock.now().getTime();
  const { row, response, outbox } = await groupCommit(deps.db, async (trx) => {
    // Write first: on SQLite a read-then-write transaction can fail with SQLITE_BUSY at once.
    const updated = await trx
      .updateTable('backups')
      .set({
        verify_status: 'queued',
        // The outcome fields describe the verification shown beside them: this new one.
        verify_error: null,
        verified_at: null,
        verify_job_id: verifyJobId(input.backupId, verificationId),
      })
      .where('id', '=', input.backupId)
      .where('status', '=', 'succeeded')
      .where((eb) =>
        eb.or([eb('verify_status', 'is', null), eb('verify_status', 'in', ['passed', 'failed'])]),
      )
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) {
      const existing = await getBackup(trx, input.backupId);
      if (!existing) throw new NotFoundError(`There is no backup with id ${input.backupId}.`);
      if (existing.status !== 'succeeded') {
        throw new ConflictError(
          `Backup ${input.backupId} is ${existing.status}; only a succeeded backup can be verified.`,
        );
      }
      throw new ConflictError(
        `A verification of backup ${input.backupId} is already ${existing.verify_status}; wait for it to finish.`,
      );
    }
    const row = (await getBackup(trx, input.backupId))!;
    const outbox = await insertOutboxRow(trx, {
      queue: 'backups',
      jobName: 'verify-backup',
      jobId: verifyJobId(input.backupId, verificationId),
      payload: { backup_id: input.backupId, verification_id: verificationId },
      now,
    });
    const response = input.respond(row);
    await input.claim?.complete(trx, response);
    return { row, response, outbox };
  });
  deps.logger.info({ backup_id: input.backupId, verify_status: 'queued' }, 'backup verification requested');
  await afterCommitDispatch(deps, outbox);
  return { row, response };
}

async function afterCommitDispatch(deps: ProducerDeps, outbox: OutboxRow): Promise<void> {
  await deps.afterCommit?.();
  await dispatchOutboxRow(deps, outbox);
}
