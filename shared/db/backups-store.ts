import type { Kysely, Selectable } from 'kysely';
import type { BackupsTable, Database } from './schema';
import { failFencedRun, noteFencedRunError, startFencedRun, type StartOutcome } from './fenced-run';
import { newestFirst, oldestFirst, type KeysetAfter } from './newest-first';

/** Backup manifests. Worker writes are fenced: they change a row only when `fence <= token`. */

export type BackupRow = Selectable<BackupsTable>;

export interface BackupManifest {
  fileName: string;
  sizeBytes: number;
  sha256: string;
  schemaVersion: string;
  rowCounts: Record<string, number>;
  contentSha256: Record<string, string>;
}

export async function insertBackup(
  db: Kysely<Database>,
  b: { id: string; label: string | null; trigger: 'manual' | 'scheduled'; now: number },
): Promise<BackupRow> {
  const row: BackupRow = {
    id: b.id,
    label: b.label,
    status: 'queued',
    trigger: b.trigger,
    file_name: null,
    size_bytes: null,
    sha256: null,
    schema_version: null,
    row_counts: null,
    content_sha256: null,
    error: null,
    attempts: 0,
    fence: 0,
    created_at: b.now,
    started_at: null,
    finished_at: null,
    verify_status: null,
    verify_job_id: null,
    verified_at: null,
    verify_error: null,
    imported_at: null,
  };
  await db.insertInto('backups').values(row).execute();
  return row;
}

/** Insert unless a backup with this id exists (scheduled runs: one row per scheduler tick). @returns whether it inserted. */
export async function insertBackupIfAbsent(
  db: Kysely<Database>,
  b: { id: string; label: string | null; trigger: 'manual' | 'scheduled'; now: number },
): Promise<boolean> {
  const r = await db
    .insertInto('backups')
    .values({ id: b.id, label: b.label, status: 'queued', trigger: b.trigger, created_at: b.now })
    .onConflict((oc) => oc.column('id').doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0) === 1;
}

export async function getBackup(db: Kysely<Database>, id: string): Promise<BackupRow | undefined> {
  return db.selectFrom('backups').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Newest first; `after` is the (created_at, id) of the last row of the previous page. */
export async function listBackups(
  db: Kysely<Database>,
  opts: { limit: number; after?: { createdAt: number; id: string } },
): Promise<BackupRow[]> {
  return newestFirst(db.selectFrom('backups').selectAll(), opts).execute();
}

export type { StartOutcome };

/** queued|running → running under `fence`. A terminal row is left alone (the job is a no-op). */
export function startBackupRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number },
): Promise<StartOutcome> {
  return startFencedRun(db, 'backups', a, { countAttempt: true });
}

/** running → succeeded with the manifest. @returns false when a newer fence owns the row. */
export async function completeBackupRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number; manifest: BackupManifest },
): Promise<boolean> {
  const r = await db
    .updateTable('backups')
    .set({
      status: 'succeeded',
      finished_at: a.now,
      file_name: a.manifest.fileName,
      size_bytes: a.manifest.sizeBytes,
      sha256: a.manifest.sha256,
      schema_version: a.manifest.schemaVersion,
      row_counts: JSON.stringify(a.manifest.rowCounts),
      content_sha256: JSON.stringify(a.manifest.contentSha256),
      error: null,
    })
    .where('id', '=', a.id)
    .where('status', '=', 'running')
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** running|queued → failed (final attempt). @returns false when a newer fence owns the row. */
export function failBackupRun(
  db: Kysely<Database>,
  a: { id: string; fence: number; now: number; error: string },
): Promise<boolean> {
  return failFencedRun(db, 'backups', a);
}

/** Record a failed attempt that will be retried: the row stays running with the error visible. */
export function noteBackupAttemptError(
  db: Kysely<Database>,
  a: { id: string; fence: number; error: string },
): Promise<void> {
  return noteFencedRunError(db, 'backups', a);
}

/** Succeeded backups beyond the newest `keep`, oldest last. */
export async function succeededBackupsBeyond(db: Kysely<Database>, keep: number): Promise<BackupRow[]> {
  return db
    .selectFrom('backups')
    .selectAll()
    .where('status', '=', 'succeeded')
    .orderBy('finished_at', 'desc')
    .orderBy('id', 'desc')
    .offset(keep)
    .limit(1000)
    .execute();
}

export async function deleteBackupRow(db: Kysely<Database>, id: string): Promise<boolean> {
  const r = await db.deleteFrom('backups').where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) === 1;
}

/** Resources the reconciler checks: not terminal, older than `createdBefore`. */
export async function listUnfinishedBackups(
  db: Kysely<Database>,
  opts: { createdBefore: number; limit: number; after?: KeysetAfter },
): Promise<
  Array<Pick<BackupRow, 'id' | 'created_at' | 'status' | 'trigger' | 'verify_status' | 'verify_job_id'>>
> {
  return oldestFirst(
    db
      .selectFrom('backups')
      .select(['id', 'created_at', 'status', 'trigger', 'verify_status', 'verify_job_id'])
      .where((eb) =>
        eb.or([eb('status', 'in', ['queued', 'running']), eb('verify_status', 'in', ['queued', 'running'])]),
      )
      .where('created_at', '<=', opts.createdBefore),
    opts,
  ).execute();
}

/** verify queued|running → running under `fence`. @returns false when terminal or a newer fence owns the row. */
export async function startBackupVerification(
  db: Kysely<Database>,
  a: { id: string; fence: number },
): Promise<boolean> {
  const r = await db
    .updateTable('backups')
    .set({ verify_status: 'running', fence: a.fence })
    .where('id', '=', a.id)
    .where('verify_status', 'in', ['queued', 'running'])
    // Strictly newer, as in startFencedRun.
    .where('fence', '<', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function finishBackupVerification(
  db: Kysely<Database>,
  a: { id: string; fence: number; passed: boolean; error: string | null; now: number },
): Promise<boolean> {
  const r = await db
    .updateTable('backups')
    .set({
      verify_status: a.passed ? 'passed' : 'failed',
      verified_at: a.now,
      verify_error: a.error === null ? null : a.error.slice(0, 2000),
    })
    .where('id', '=', a.id)
    .where('verify_status', '=', 'running')
    .where('fence', '<=', a.fence)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Why {@link settleRestoredBackups} failed a backup. */
export const RESTORED_UNFINISHED =
  'was unfinished when the restored archive was taken (it belonged to the install the archive came from); not resumed after a restore';

/**
 * After a restore: backups (and verifications) the archive holds as queued or running belonged
 * to the source install, and an archive always holds its own backup as running. Left alone,
 * the reconciler would run them again here and write `taskyard-backup-<id>` over the file of
 * the same name, which may be the very archive restored from. They are failed instead, with
 * {@link RESTORED_UNFINISHED} as the error.
 *
 * Every restored row is also stamped `imported_at` (kept when an earlier restore set it):
 * its archive file belongs to the source install, so retention here deletes the row only.
 * With `adoptArchives` (the source install is gone for good) no row is stamped and earlier
 * stamps are cleared: this install's retention then deletes those files like its own.
 * @returns ids of the backups failed, and of those whose verification was failed
 */
export async function settleRestoredBackups(
  db: Kysely<Database>,
  now: number,
  opts: { adoptArchives?: boolean } = {},
): Promise<{ backups: string[]; verifications: string[]; imported: number }> {
  return db.transaction().execute(async (trx) => {
    const backups = await trx
      .updateTable('backups')
      .set({ status: 'failed', error: RESTORED_UNFINISHED, finished_at: now })
      .where('status', 'in', ['queued', 'running'])
      .returning('id')
      .execute();
    const verifications = await trx
      .updateTable('backups')
      .set({ verify_status: 'failed', verify_error: RESTORED_UNFINISHED })
      .where('verify_status', 'in', ['queued', 'running'])
      .returning('id')
      .execute();
    // Adopted (the source install is gone for good): every restored archive becomes this
    // install's own, earlier stamps included.
    const stamped = opts.adoptArchives
      ? await trx.updateTable('backups').set({ imported_at: null }).executeTakeFirst()
      : await trx
          .updateTable('backups')
          .set({ imported_at: now })
          .where('imported_at', 'is', null)
          .executeTakeFirst();
    const imported = opts.adoptArchives
      ? Number(stamped.numUpdatedRows)
      : Number(
          (
            await trx
              .selectFrom('backups')
              .select((eb) => eb.fn.countAll().as('n'))
              .where('imported_at', 'is not', null)
              .executeTakeFirstOrThrow()
          ).n,
        );
    return { backups: backups.map((r) => r.id), verifications: verifications.map((r) => r.id), imported };
  });
}
