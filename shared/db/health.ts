import { sql } from 'kysely';
import { DeadlineError, withDeadline } from '../deadline';
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
  try {
    // A deadline only: the query is not cancelled, its late result is ignored.
    await withDeadline('the database', timeoutMs, sql`select 1`.execute(handle.db));
  } catch (err) {
    if (err instanceof DeadlineError) {
      throw new DependencyUnavailableError(`the database did not answer SELECT 1 within ${timeoutMs} ms`);
    }
    // The server's own message can name the database or the user: only its code is shown.
    throw new DependencyUnavailableError(`the database is unavailable (${safeErrorReason(err)})`, 5, err);
  }
}
