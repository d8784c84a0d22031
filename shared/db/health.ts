import { sql } from 'kysely';
import { DependencyUnavailableError } from '../errors';
import type { DatabaseHandle } from './database';
import { safeErrorReason } from './unavailable';

/**
 * Check that the database answers `SELECT 1` within `timeoutMs`.
 * @defaultValue timeoutMs 1000
 * @throws DependencyUnavailableError (503) saying why: no answer in time, or the query's error (as `cause`).
 * The message does not name the database: /readyz shows it to unauthenticated callers.
 */
export async function pingDatabase(handle: DatabaseHandle, timeoutMs = 1000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  // A deadline only: the query is not cancelled, its late result is ignored.
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new DependencyUnavailableError(`the database did not answer SELECT 1 within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  const query = sql`select 1`.execute(handle.db).then(
    () => undefined,
    (err: unknown) => {
      // The server's own message can name the database or the user: only its code is shown.
      throw new DependencyUnavailableError(`the database is unavailable (${safeErrorReason(err)})`, 5, err);
    },
  );
  try {
    await Promise.race([query, deadline]);
  } finally {
    clearTimeout(timer);
    // The losing promise must not surface as an unhandled rejection.
    query.catch(() => undefined);
  }
}
