import { z } from 'zod';
import type { BackupRow } from '../db/backups-store';
import { rfc3339 } from './common';
import { backupJobId } from './job-ids';

/** POST /v1/backups body: optional; `{label?}` of at most 200 characters. */
export const createBackupBodySchema = z.preprocess(
  (v) => v ?? {},
  z
    .object({
      label: z
        .string({ error: 'label must be a string' })
        .trim()
        .min(1, { error: 'label must not be blank' })
        .max(200, { error: 'label must be at most 200 characters' })
        // null as well: a client may send back the `label: null` a backup shows.
        .nullish(),
    })
    .strict(),
);

export const verifyBackupBodySchema = z.preprocess((v) => v ?? {}, z.object({}).strict());

export interface BackupView {
  id: string;
  label: string | null;
  status: BackupRow['status'];
  trigger: BackupRow['trigger'];
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  attempts: number;
  size_bytes: number | null;
  sha256: string | null;
  schema_version: string | null;
  row_counts: Record<string, number> | null;
  error: string | null;
  /** Its BullMQ job in queue `backups` (GET /v1/jobs/backups/:jobId). */
  job_id: string;
  verification: {
    status: BackupRow['verify_status'];
    verified_at: string | null;
    error: string | null;
    /** The latest verification's job in queue `backups`; null before the first. */
    job_id: string | null;
  };
}

function parseJson<T>(text: string | null): T | null {
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

export function backupView(row: BackupRow): BackupView {
  return {
    id: row.id,
    label: row.label,
    status: row.status,
    trigger: row.trigger,
    created_at: rfc3339(row.created_at),
    started_at: rfc3339(row.started_at),
    finished_at: rfc3339(row.finished_at),
    attempts: Number(row.attempts),
    size_bytes: row.size_bytes === null ? null : Number(row.size_bytes),
    sha256: row.sha256,
    schema_version: row.schema_version,
    row_counts: parseJson<Record<string, number>>(row.row_counts),
    error: row.error,
    job_id: backupJobId(row.id),
    verification: {
      status: row.verify_status,
      verified_at: rfc3339(row.verified_at),
      error: row.verify_error,
      job_id: row.verify_job_id,
    },
  };
}
