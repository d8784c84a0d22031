import { sql, type Kysely } from 'kysely';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createDatabase, relaxedDurability, type DatabaseHandle } from '../../shared/db/database';
import { groupCommit } from '../../shared/db/group-commit';
import type { Database } from '../../shared/db/schema';
import { BACKENDS, testPostgresUrl } from '../helpers/services';
import { disposeTestDatabase } from '../helpers/test-database';

/**
 * groupCommit (SQLite: callers of one event-loop turn share one transaction and one COMMIT,
 * each in its own savepoint; Postgres: a plain transaction per caller) and relaxedDurability.
 * The tables are scratch tables of each test's private database.
 */

const handles: DatabaseHandle[] = [];
/** Every database a test made, dropped at the end. */
const urls: string[] = [];

afterEach(async () => {
  await Promise.all(handles.splice(0).map((h) => h.close()));
});

afterAll(async () => {
  for (const url of urls) await disposeTestDatabase(url);
});

/** The scratch tables are not in the Database type; queries here go through `sql`. */
const insert = (db: Kysely<Database>, x: number) => sql`insert into items (x) values (${x})`.execute(db);
const values = async (db: Kysely<Database>) =>
  (await sql<{ x: number }>`select x from items order by x`.execute(db)).rows.map((r) => Number(r.x));

describe.each(BACKENDS)('groupCommit on $backend', ({ backend, makeUrl }) => {
  async function open(): Promise<{ handle: DatabaseHandle; url: string }> {
    const url = makeUrl('group');
    urls.push(url);
    const handle = await createDatabase(url);
    handles.push(handle);
    await sql`create table items (x integer primary key)`.execute(handle.db);
    await sql`create table parents (id integer primary key)`.execute(handle.db);
    // Checked at COMMIT, so a violation makes the COMMIT itself fail.
    await sql`create table children (id integer primary key, parent_id integer not null references parents (id) deferrable initially deferred)`.execute(
      handle.db,
    );
    return { handle, url };
  }

  it('50 concurrent callers: each gets its own result and all 50 rows are committed', async () => {
    const { handle, url } = await open();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        groupCommit(handle.db, async (trx) => {
          await insert(trx, i);
          return `done ${i}`;
        }),
      ),
    );
    expect(results).toEqual(Array.from({ length: 50 }, (_, i) => `done ${i}`));
    // Settled means committed: a second, independent handle sees every row.
    const other = await createDatabase(url);
    handles.push(other);
    expect(await values(other.db)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('a caller that throws rolls back only its own writes; the others commit', async () => {
    const { handle } = await open();
    const outcomes = await Promise.allSettled(
      [1, 2, 3, 4, 5].map((x) =>
        groupCommit(handle.db, async (trx) => {
          await insert(trx, x * 10);
          await insert(trx, x * 10 + 1);
          if (x === 3) throw new Error('caller 3 changed its mind');
          return x;
        }),
      ),
    );
    expect(outcomes.map((o) => o.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
    ]);
    expect((outcomes[2] as PromiseRejectedResult).reason).toEqual(new Error('caller 3 changed its mind'));
    expect(await values(handle.db)).toEqual([10, 11, 20, 21, 40, 41, 50, 51]);
  });

  it('a failing statement (unique violation) fails its caller only', async () => {
    const { handle } = await open();
    await insert(handle.db, 7);
    const outcomes = await Promise.allSettled(
      [6, 7, 8].map((x) => groupCommit(handle.db, (trx) => insert(trx, x).then(() => x))),
    );
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(await values(handle.db)).toEqual([6, 7, 8]);
  });

  it(
    backend === 'sqlite'
      ? 'a COMMIT that fails fails every caller of its batch and keeps none of their writes'
      : 'a COMMIT that fails fails its own caller only (one transaction per caller)',
    async () => {
      const { handle } = await open();
      const outcomes = await Promise.allSettled(
        [1, 2, 3].map((x) =>
          groupCommit(handle.db, async (trx) => {
            await insert(trx, x);
            // Caller 2 points at a parent that does not exist: refused only at COMMIT.
            if (x === 2) await sql`insert into children (id, parent_id) values (1, 999)`.execute(trx);
          }),
        ),
      );
      if (backend === 'sqlite') {
        expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected']);
        for (const o of outcomes) expect(String((o as PromiseRejectedResult).reason)).toMatch(/FOREIGN KEY/i);
        expect(await values(handle.db)).toEqual([]);
      } else {
        expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
        expect(String((outcomes[1] as PromiseRejectedResult).reason)).toMatch(/foreign key/i);
        expect(await values(handle.db)).toEqual([1, 3]);
      }
      // The handle is still usable afterwards.
      await groupCommit(handle.db, (trx) => insert(trx, 100));
      expect(await values(handle.db)).toContain(100);
    },
  );

  it('inside an existing transaction it runs in that transaction (rolled back with it)', async () => {
    const { handle } = await open();
    await expect(
      handle.db.transaction().execute(async (trx) => {
        expect(await groupCommit(trx, (t) => insert(t, 1).then(() => 'inner'))).toBe('inner');
        throw new Error('outer rolls back');
      }),
    ).rejects.toThrow('outer rolls back');
    expect(await values(handle.db)).toEqual([]);
  });

  it(
    backend === 'sqlite'
      ? 'an error that ends the whole transaction fails the batch, and every caller is told the cause'
      : 'an error in one transaction fails its own caller only',
    async () => {
      const { handle } = await open();
      if (backend === 'sqlite') {
        // RAISE(ROLLBACK) ends the transaction itself, savepoints included.
        await sql`create trigger no_thirteen before insert on items when new.x = 13 begin select raise(rollback, 'thirteen refused'); end`.execute(
          handle.db,
        );
      } else {
        await sql`create function no_thirteen() returns trigger language plpgsql as $$ begin if new.x = 13 then raise exception 'thirteen refused'; end if; return new; end $$`.execute(
          handle.db,
        );
        await sql`create trigger no_thirteen before insert on items for each row execute function no_thirteen()`.execute(
          handle.db,
        );
      }
      const outcomes = await Promise.allSettled(
        [1, 13, 2].map((x) => groupCommit(handle.db, (trx) => insert(trx, x))),
      );
      if (backend === 'sqlite') {
        expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected']);
        for (const o of outcomes) {
          expect(String((o as PromiseRejectedResult).reason)).toContain(
            'a group commit batch was rolled back: thirteen refused',
          );
        }
        expect(await values(handle.db)).toEqual([]);
      } else {
        expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
        expect(await values(handle.db)).toEqual([1, 2]);
      }
      // The next batch runs normally.
      await groupCommit(handle.db, (trx) => insert(trx, 3));
      expect(await values(handle.db)).toContain(3);
    },
  );

  it('callers of later turns run in later transactions and see earlier commits', async () => {
    const { handle } = await open();
    for (let i = 0; i < 5; i++) {
      const seen = await groupCommit(handle.db, async (trx) => {
        const before = await values(trx);
        await insert(trx, i);
        return before.length;
      });
      expect(seen).toBe(i);
    }
  });
});

describe('relaxedDurability', () => {
  const synchronous = async (db: Kysely<Database>) =>
    (await sql<{ synchronous: number }>`pragma synchronous`.execute(db)).rows[0]!.synchronous;

  it('SQLite: runs at synchronous = NORMAL and restores FULL afterwards, also when the work throws', async () => {
    const url = BACKENDS[0]!.makeUrl('relaxed');
    urls.push(url);
    const handle = await createDatabase(url);
    handles.push(handle);
    expect(await synchronous(handle.db)).toBe(2);
    expect(await relaxedDurability(handle.db, (db) => synchronous(db))).toBe(1);
    expect(await synchronous(handle.db)).toBe(2);
    await expect(
      relaxedDurability(handle.db, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await synchronous(handle.db)).toBe(2);
  });

  it('SQLite: a concurrent commit outside it is not relaxed (the connection is reserved)', async () => {
    const url = BACKENDS[0]!.makeUrl('relaxed');
    urls.push(url);
    const handle = await createDatabase(url);
    handles.push(handle);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const relaxed = relaxedDurability(handle.db, async (db) => {
      await gate;
      return synchronous(db);
    });
    // Queued behind the reserved connection, so it reads FULL after the relaxed work ends.
    const outside = synchronous(handle.db);
    release();
    expect(await relaxed).toBe(1);
    expect(await outside).toBe(2);
  });

  it('Postgres: runs on a session with synchronous_commit off; its writes are visible at once', async () => {
    const url = testPostgresUrl('relaxed');
    urls.push(url);
    const handle = await createDatabase(url);
    handles.push(handle);
    const setting = async (db: Kysely<Database>) =>
      (await sql<{ synchronous_commit: string }>`show synchronous_commit`.execute(db)).rows[0]!
        .synchronous_commit;
    await sql`create table items (x integer primary key)`.execute(handle.db);
    const inside = await relaxedDurability(handle.db, async (db) => {
      await insert(db, 1);
      return setting(db);
    });
    expect(inside).toBe('off');
    expect(await setting(handle.db)).toBe('on');
    expect(await values(handle.db)).toEqual([1]);
  });

  it('Postgres with ?relaxed_commits=off (behind a transaction pooler): runs on the main pool, fully durable', async () => {
    const url = testPostgresUrl('relaxed_off');
    urls.push(url);
    const u = new URL(url);
    u.searchParams.set('relaxed_commits', 'off');
    const handle = await createDatabase(u.toString());
    handles.push(handle);
    const inside = await relaxedDurability(handle.db, async (db) =>
      String(
        (await sql<{ s: string }>`select current_setting('synchronous_commit') as s`.execute(db)).rows[0]!.s,
      ),
    );
    expect(inside).toBe('on');
    u.searchParams.set('relaxed_commits', 'maybe');
    await expect(createDatabase(u.toString())).rejects.toThrow('invalid relaxed_commits "maybe"');
  });
});
