import type { ControlledTransaction, Kysely } from 'kysely';
import { toError } from '../errors';
import { isSqliteInstance } from './database';
import type { Database } from './schema';

/**
 * Group commit for SQLite: transactions requested in the same turn of the event loop run
 * one after another inside one SQLite transaction, each in its own savepoint, and share one
 * COMMIT, that is one fsync (synchronous = FULL). better-sqlite3 blocks the event loop for
 * the whole fsync, so without this every accepted request paid ~265 µs of blocked loop on
 * the bench machine (measured per statement under the enqueue benchmark's load); a batch
 * pays it once.
 *
 * Each caller keeps the semantics of its own transaction: its work commits or rolls back as
 * a whole, a failure (thrown by `fn`) rolls back only its own savepoint, and its promise
 * settles only after the shared COMMIT, so nothing is reported before it is on disk. If the
 * COMMIT itself fails, every caller in the batch gets that error and nothing is written;
 * likewise when a caller's error ended the whole transaction (the error names it).
 *
 * On Postgres (and inside an existing transaction) this is a plain transaction: the server
 * already shares WAL flushes between concurrent commits, and savepoints would cost round trips.
 * Only for short transactions that do nothing but database work, through `trx` only: a slow
 * `fn` holds up its batch, and one that used the root `db` would wait for the connection its
 * own batch holds (a deadlock of every SQLite user in the process). The batch begins with a
 * deferred BEGIN, so `fn` should write before it reads: a read-then-write transaction on
 * SQLite can fail at once with SQLITE_BUSY when another process writes.
 */
export function groupCommit<T>(db: Kysely<Database>, fn: (trx: Kysely<Database>) => Promise<T>): Promise<T> {
  // Already inside a transaction: the caller's transaction is the unit of commit.
  if (db.isTransaction) return fn(db);
  if (!isSqliteInstance(db)) return db.transaction().execute(fn);
  let group = groups.get(db);
  if (!group) {
    group = new Group(db);
    groups.set(db, group);
  }
  return group.submit(fn);
}

/** Upper bound on a batch, so one COMMIT never waits behind an unbounded queue. */
export const GROUP_COMMIT_MAX_BATCH = 64;

const groups = new WeakMap<Kysely<Database>, Group>();

interface Pending {
  fn: (trx: Kysely<Database>) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

class Group {
  private queue: Pending[] = [];
  private scheduled = false;

  constructor(private readonly db: Kysely<Database>) {}

  submit<T>(fn: (trx: Kysely<Database>) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0) return;
    this.scheduled = true;
    // setImmediate, not a microtask: requests whose I/O completed in this poll phase join the batch.
    setImmediate(() => {
      const batch = this.queue.splice(0, GROUP_COMMIT_MAX_BATCH);
      void this.run(batch).finally(() => {
        this.scheduled = false;
        this.schedule();
      });
    });
  }

  private async run(batch: Pending[]): Promise<void> {
    let trx: ControlledTransaction<Database>;
    try {
      trx = await this.db.startTransaction().execute();
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    const outcomes: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = [];
    try {
      for (const p of batch) {
        const sp = await trx.savepoint('group_commit_item').execute();
        try {
          const value = await p.fn(sp);
          await sp.releaseSavepoint('group_commit_item').execute();
          outcomes.push({ ok: true, value });
        } catch (err) {
          try {
            await sp.rollbackToSavepoint('group_commit_item').execute();
            await sp.releaseSavepoint('group_commit_item').execute();
          } catch (undoErr) {
            // Some errors (SQLITE_FULL, SQLITE_IOERR, …) end the whole transaction, savepoints
            // included: the batch is lost, and every caller is told why, not "no such savepoint".
            throw new Error(`a group commit batch was rolled back: ${toError(err).message}`, {
              cause: new AggregateError([err, undoErr]),
            });
          }
          outcomes.push({ ok: false, err });
        }
      }
      await trx.commit().execute();
    } catch (err) {
      // The savepoint machinery or the COMMIT failed: nothing of this batch is kept.
      await trx
        .rollback()
        .execute()
        .catch(() => undefined);
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i]!;
      if (o.ok) p.resolve(o.value);
      else p.reject(o.err);
    });
  }
}
