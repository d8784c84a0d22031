import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { BackupView } from '../contract/backups';
import { backupJobId } from '../contract/job-ids';
import type { HttpClient } from './http-client';
import { TaskyardResponseError } from './problem-error';

/**
 * The backups part of the typed client (DESIGN.md §5). Writes carry an Idempotency-Key
 * that stays the same on every retry, so a retried request can never make a second
 * backup: the api replays the first answer, or says 409 while the first is running.
 */

const timestamp = z.iso.datetime({ offset: false }).nullable();

/** What the api answers for one backup; checked so a wrong answer fails loudly here. */
export const backupViewSchema = z
  .looseObject({
    id: z.uuid(),
    label: z.string().nullable(),
    status: z.enum(['queued', 'running', 'succeeded', 'failed']),
    trigger: z.enum(['manual', 'scheduled']),
    created_at: timestamp,
    started_at: timestamp,
    finished_at: timestamp,
    attempts: z.number().int().nonnegative(),
    size_bytes: z.number().nonnegative().nullable(),
    sha256: z.string().nullable(),
    schema_version: z.string().nullable(),
    row_counts: z.record(z.string(), z.number()).nullable(),
    error: z.string().nullable(),
    // Optional: a replay of an answer stored before the api sent them lacks them.
    job_id: z.string().optional(),
    verification: z.looseObject({
      status: z.enum(['queued', 'running', 'passed', 'failed']).nullable(),
      verified_at: timestamp,
      error: z.string().nullable(),
      job_id: z.string().nullable().optional(),
    }),
  })
  .transform((v) => ({
    ...v,
    job_id: v.job_id ?? backupJobId(v.id),
    verification: { ...v.verification, job_id: v.verification.job_id ?? null },
  })) satisfies z.ZodType<BackupView>;

export const backupPageSchema = z.looseObject({
  items: z.array(backupViewSchema),
  next_cursor: z.string().min(1).nullable(),
});

/** One page of GET /v1/backups, newest first. */
export interface BackupPage {
  items: BackupView[];
  /** Pass back as `cursor` for the next page; null on the last page. */
  next_cursor: string | null;
}

export interface CreateBackupOptions {
  /** At most 200 characters. */
  label?: string;
  /** Names this request; absent or blank → a fresh UUID v4. Sent verbatim otherwise. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface VerifyBackupOptions {
  /** Absent or blank → a fresh UUID v4. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface ListBackupsOptions {
  /** 1–100. @defaultValue the api's default (20) */
  limit?: number;
  /** `next_cursor` of the previous page; absent for the newest page. */
  cursor?: string;
  signal?: AbortSignal;
}

export interface BackupsClient {
  /**
   * POST /v1/backups. Transient failures (no answer, 5xx, 409 in flight) are retried with
   * the same key; the backup comes from the 202 or from the api's replay of it.
   * @throws TaskyardProblemError for any other 4xx at once, or the last failure after retries
   */
  createBackup(opts?: CreateBackupOptions): Promise<BackupView>;
  /** GET /v1/backups/:id. @throws TaskyardProblemError `not-found` */
  getBackup(id: string, opts?: { signal?: AbortSignal }): Promise<BackupView>;
  /** GET /v1/backups: one page. */
  listBackups(opts?: ListBackupsOptions): Promise<BackupPage>;
  /** Every backup, newest first, fetching page after page as the caller iterates. */
  iterateBackups(opts?: Omit<ListBackupsOptions, 'cursor'>): AsyncGenerator<BackupView, void, undefined>;
  /** POST /v1/backups/:id/verify: queue a restore drill. Retried like createBackup. */
  verifyBackup(id: string, opts?: VerifyBackupOptions): Promise<BackupView>;
}

/**
 * The caller's key, or a new UUID v4 when it is absent or blank after trimming (a blank
 * key would be refused by the api, and means "I have none"). A given key is kept as is.
 */
export function chooseIdempotencyKey(given: string | undefined, newKey: () => string = randomUUID): string {
  return given === undefined || given.trim() === '' ? newKey() : given;
}

export function backupsClient(http: HttpClient): BackupsClient {
  const one = (id: string) => `/v1/backups/${encodeURIComponent(id)}`;

  async function listBackups(opts: ListBackupsOptions = {}): Promise<BackupPage> {
    const r = await http.send({
      method: 'GET',
      path: '/v1/backups',
      query: { limit: opts.limit, cursor: opts.cursor },
      schema: backupPageSchema,
      signal: opts.signal,
    });
    return { items: r.body.items, next_cursor: r.body.next_cursor };
  }

  return {
    async createBackup(opts = {}) {
      const r = await http.send({
        method: 'POST',
        path: '/v1/backups',
        headers: { 'idempotency-key': chooseIdempotencyKey(opts.idempotencyKey) },
        // The body is built once: every retry must fingerprint the same as the first try.
        body: opts.label === undefined ? {} : { label: opts.label },
        schema: backupViewSchema,
        signal: opts.signal,
      });
      return r.body;
    },

    async getBackup(id, opts = {}) {
      const r = await http.send({
        method: 'GET',
        path: one(id),
        schema: backupViewSchema,
        signal: opts.signal,
      });
      return r.body;
    },

    listBackups,

    async *iterateBackups(opts = {}) {
      const seen = new Set<string>();
      let cursor: string | undefined;
      for (;;) {
        const page = await listBackups({ ...opts, cursor });
        yield* page.items;
        if (page.next_cursor === null) return;
        // A server that hands back a cursor twice would keep us paging forever.
        if (seen.has(page.next_cursor)) {
          throw new TaskyardResponseError(
            'GET',
            '/v1/backups',
            200,
            'the api returned a cursor it returned before',
          );
        }
        seen.add(page.next_cursor);
        cursor = page.next_cursor;
      }
    },

    async verifyBackup(id, opts = {}) {
      const r = await http.send({
        method: 'POST',
        path: `${one(id)}/verify`,
        headers: { 'idempotency-key': chooseIdempotencyKey(opts.idempotencyKey) },
        body: {},
        schema: backupViewSchema,
        signal: opts.signal,
      });
      return r.body;
    },
  };
}
