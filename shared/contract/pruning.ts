import { z } from 'zod';
import { parsePruneCounts, type PruneCounts, type PruningRunRow } from '../db/pruning-store';
import { rfc3339 } from './common';
import { pruneJobId } from './job-ids';

/** POST /v1/pruning/runs body: optional; `{dry_run?}` (default false: delete). */
export const createPruningRunBodySchema = z.preprocess(
  (v) => v ?? {},
  z
    .object({
      dry_run: z.boolean({ error: 'dry_run must be true or false' }).optional(),
    })
    .strict(),
);

export interface PruningRunView {
  id: string;
  status: PruningRunRow['status'];
  trigger: PruningRunRow['trigger'];
  dry_run: boolean;
  /** Rows (files, jobs) deleted per kind; for a dry run, those that would be. Null before it starts. */
  counts: PruneCounts | null;
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  /** A manual run's BullMQ job in queue `pruning`; null for a scheduled run (a scheduler's tick). */
  job_id: string | null;
}

export function pruningRunView(row: PruningRunRow): PruningRunView {
  return {
    id: row.id,
    status: row.status,
    trigger: row.trigger,
    dry_run: Number(row.dry_run) === 1,
    counts: row.counts === null ? null : parsePruneCounts(row.counts),
    created_at: rfc3339(row.created_at),
    started_at: rfc3339(row.started_at),
    finished_at: rfc3339(row.finished_at),
    error: row.error,
    job_id: row.trigger === 'manual' ? pruneJobId(row.id) : null,
  };
}
