import { z } from 'zod';

/** RFC 3339 UTC from stored epoch milliseconds. */
export function rfc3339(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined ? null : new Date(Number(ms)).toISOString();
}

/** Lists: newest first, `limit` ≤ 100, opaque cursor (DESIGN.md §5). */
export const listQuerySchema = z
  .object({
    // Digits only: a coercing number would also take '', '0x10', '1e2' and ' 5'.
    limit: z
      .string({ error: 'limit must be a whole number from 1 to 100' })
      .regex(/^\d{1,6}$/, { error: 'limit must be a whole number from 1 to 100' })
      .transform(Number)
      .pipe(
        z
          .number()
          .min(1, { error: 'limit must be at least 1' })
          .max(100, { error: 'limit must be at most 100' }),
      )
      .default(20),
    cursor: z.string().max(512, { error: 'cursor is too long' }).optional(),
  })
  .strict();

/** A keyset position: (created_at, id) of the last row of a page. */
export interface KeysetCursor {
  createdAt: number;
  id: string;
}

/**
 * @param list what the cursor pages over (path and filters), so a cursor handed to another list
 *   is refused instead of silently paging that list from an unrelated position.
 */
export function encodeCursor(c: KeysetCursor, list: string): string {
  return Buffer.from(JSON.stringify([c.createdAt, c.id, list])).toString('base64url');
}

/**
 * Every id a list pages over: UUIDs and simulation ids (SIMULATION_ID_PATTERN). Anything else,
 * e.g. a NUL byte Postgres refuses in text, cannot come from a cursor this api issued.
 */
const CURSOR_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** What keysetPage's list names look like; anything else (it is echoed in the 400) was not issued here. */
const CURSOR_LIST = /^GET \/[\x21-\x7e]{1,100}$/;

/**
 * @returns undefined when the cursor is not one we issued. `list` is undefined for a cursor
 *   issued before cursors named their list: those are still honoured, on any list, so a client
 *   paging across the upgrade is not broken. The binding guards against mistakes, not abuse:
 *   cursors are not signed, and a cursor only positions a list the caller may read anyway.
 */
export function decodeCursor(raw: string): { after: KeysetCursor; list: string | undefined } | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
    if (
      Array.isArray(v) &&
      (v.length === 2 || (v.length === 3 && typeof v[2] === 'string' && CURSOR_LIST.test(v[2]))) &&
      Number.isSafeInteger(v[0]) &&
      typeof v[1] === 'string' &&
      CURSOR_ID.test(v[1])
    ) {
      return { after: { createdAt: v[0] as number, id: v[1] }, list: v[2] as string | undefined };
    }
  } catch {
    // fall through
  }
  return undefined;
}

/** Ids are stored lower case (randomUUID); an upper-case spelling names the same resource. */
export const uuidParamSchema = z
  .object({
    id: z
      .string()
      .uuid({ error: 'id must be a UUID' })
      .transform((id) => id.toLowerCase()),
  })
  .strict();
