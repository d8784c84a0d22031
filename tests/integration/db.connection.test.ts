import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { pingDatabase } from '../../shared/db/health';
import { isDatabaseUnavailable } from '../../shared/db/unavailable';
import { DependencyUnavailableError } from '../../shared/errors';
import { createLogger } from '../../shared/logger';
import { BACKENDS, testPostgresUrl, waitFor } from '../helpers/services';

const handles: DatabaseHandle[] = [];
const pgSchemas: string[] = [];
const sqliteDirs: string[] = [];

async function open(url: string): Promise<DatabaseHandle> {
  const handle = await createDatabase(url);
  handles.push(handle);
  return handle;
}

afterEach(async () => {
  await Promise.all(handles.splice(0).map((h) => h.close()));
});

afterAll(async () => {
  for (const dir of sqliteDirs) fs.rmSync(dir, { recursive: true, force: true });
  const base = new URL(testPostgresUrl());
  base.searchParams.delete('schema');
  const admin = await createDatabase(base.toString());
  try {
    for (const s of pgSchemas) await sql`drop schema if exists ${sql.id(s)} cascade`.execute(admin.db);
  } finally {
    await admin.close();
  }
});

describe.each(BACKENDS)('createDatabase on $backend', ({ backend, makeUrl }) => {
  function url(): string {
    const u = makeUrl('conn');
    if (backend === 'postgres') pgSchemas.push(new URL(u).searchParams.get('schema')!);
    else sqliteDirs.push(path.dirname(u.slice('sqlite:'.length)));
    return u;
  }

  it('reports its dialect and answers a ping', async () => {
    const handle = await open(url());
    expect(handle.dialect).toBe(backend);
    await expect(pingDatabase(handle)).resolves.toBeUndefined();
  });

  it('returns 64-bit integers as JS numbers', async () => {
    const handle = await open(url());
    const r = await sql<{ n: number }>`select cast(${1_767_225_600_123} as bigint) as n`.execute(handle.db);
    expect(r.rows[0]!.n).toBe(1_767_225_600_123);
    const c = await sql<{ c: number }>`select count(*) as c from (select 1 union all select 2) as t`.execute(
      handle.db,
    );
    expect(c.rows[0]!.c).toBe(2);
  });

  it('close is idempotent and a closed handle fails its ping with a clear error', async () => {
    const handle = await open(url());
    await Promise.all([handle.close(), handle.close()]);
    await handle.close();
    const err = await pingDatabase(handle).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DependencyUnavailableError);
    expect((err as Error).message).toContain('the database is unavailable');
    // /readyz shows this message to anyone: it must not name the database.
    expect((err as Error).message).not.toContain(handle.displayUrl);
  });
});

describe('createDatabase on sqlite', () => {
  it('creates the parent directory and turns on WAL, busy_timeout and foreign keys', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-conn-'));
    try {
      const handle = await open(`sqlite:${path.join(dir, 'nested', 'deeper', 'x.db')}`);
      const pragma = async (name: string) =>
        Object.values(
          (await sql.raw<Record<string, unknown>>(`pragma ${name}`).execute(handle.db)).rows[0]!,
        )[0];
      expect(await pragma('journal_mode')).toBe('wal');
      expect(await pragma('busy_timeout')).toBe(5000);
      expect(await pragma('foreign_keys')).toBe(1);
      expect(fs.existsSync(path.join(dir, 'nested', 'deeper', 'x.db'))).toBe(true);
    } finally {
      await Promise.all(handles.splice(0).map((h) => h.close()));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('commits with synchronous = FULL, also when a WAL file is reopened', async () => {
    // better-sqlite3 is built with SQLITE_DEFAULT_WAL_SYNCHRONOUS=1: a reopened WAL database
    // would silently run at NORMAL (commits lost in a power cut) unless the handle says FULL.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-sync-'));
    const file = path.join(dir, 'x.db');
    const synchronous = async (h: DatabaseHandle) =>
      (await sql<{ synchronous: number }>`pragma synchronous`.execute(h.db)).rows[0]!.synchronous;
    try {
      const first = await open(`sqlite:${file}`);
      await sql`create table t (x integer)`.execute(first.db);
      expect(await synchronous(first)).toBe(2);
      await first.close();
      const reopened = await open(`sqlite:${file}`);
      expect(await synchronous(reopened)).toBe(2);
    } finally {
      await Promise.all(handles.splice(0).map((h) => h.close()));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('opens an in-memory database for sqlite::memory:', async () => {
    const handle = await open('sqlite::memory:');
    await sql`create table t (x integer)`.execute(handle.db);
    await expect(pingDatabase(handle)).resolves.toBeUndefined();
  });

  it('refuses an unsupported URL without echoing a password', async () => {
    const err = (await createDatabase('mysql://u:hunter2@host/db').catch((e: unknown) => e)) as Error;
    expect(err.message).toContain('unsupported database URL');
    expect(err.message).not.toContain('hunter2');
  });
});

describe('createDatabase on postgres', () => {
  it('creates the ?schema= schema and keeps each schema private to its handles', async () => {
    const urlA = testPostgresUrl('conn_a');
    const urlB = testPostgresUrl('conn_b');
    const schemaA = new URL(urlA).searchParams.get('schema')!;
    pgSchemas.push(schemaA, new URL(urlB).searchParams.get('schema')!);
    const a = await open(urlA);
    const b = await open(urlB);

    const current = await sql<{ s: string }>`select current_schema() as s`.execute(a.db);
    expect(current.rows[0]!.s).toBe(schemaA);
    await sql`create table only_in_a (x int)`.execute(a.db);
    // Every pooled connection gets the search_path, not only the first one.
    await Promise.all(
      Array.from({ length: 8 }, () => sql`select count(*) as c from only_in_a`.execute(a.db)),
    );
    await expect(sql`select 1 from only_in_a`.execute(b.db)).rejects.toThrow('does not exist');
  });

  it('several handles creating the same schema at once all succeed', async () => {
    const url = testPostgresUrl('conn_race');
    pgSchemas.push(new URL(url).searchParams.get('schema')!);
    const opened = await Promise.all(Array.from({ length: 5 }, () => open(url)));
    expect(opened).toHaveLength(5);
  });

  it('hides the password in displayUrl and rejects an invalid schema name', async () => {
    const handle = await open('postgres://postgres:s3cret@127.0.0.1:5432/test');
    expect(handle.displayUrl).not.toContain('s3cret');
    await expect(
      createDatabase('postgres://postgres@127.0.0.1:5432/test?schema=bad-name;drop'),
    ).rejects.toThrow('invalid schema');
  });

  it('a ping to a server that never answers fails within its deadline', async () => {
    // Accepts TCP connections and says nothing, as a hung database would.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address() as net.AddressInfo;
      const handle = await open(`postgres://postgres@127.0.0.1:${port}/test`);
      const started = performance.now();
      const err = await pingDatabase(handle, 200).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DependencyUnavailableError);
      expect((err as Error).message).toContain('did not answer SELECT 1 within 200 ms');
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('a connection the server cuts (a restart) fails its query, not the process, and the pool reconnects', async () => {
    const url = testPostgresUrl('conn_cut');
    pgSchemas.push(new URL(url).searchParams.get('schema')!);
    const lines: string[] = [];
    const logger = createLogger({ level: 'debug' }, { write: (l: string) => void lines.push(l) });
    const handle = await createDatabase(url, { logger });
    handles.push(handle);
    const killerUrl = testPostgresUrl('conn_cut_killer');
    pgSchemas.push(new URL(killerUrl).searchParams.get('schema')!);
    const killer = await open(killerUrl);
    const terminate = (pid: number) => sql`select pg_terminate_backend(${pid})`.execute(killer.db);
    const crashes: unknown[] = [];
    const monitor = (err: unknown) => crashes.push(err);
    process.on('uncaughtExceptionMonitor', monitor);
    try {
      // A client checked out, its query under way: pg-pool does not listen on it.
      const running = handle.db.connection().execute(async (conn) => {
        const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(conn);
        const pid = rows[0]!.pid;
        // Settled into a value at once: it fails while this callback still awaits the kill.
        const sleeping = sql`select pg_sleep(30)`.execute(conn).then(
          () => new Error('pg_sleep finished: the connection was not cut'),
          (err: unknown) => err,
        );
        await waitFor(
          async () =>
            (
              await sql`select 1 from pg_stat_activity where pid = ${pid} and state = 'active'`.execute(
                killer.db,
              )
            ).rows.length === 1,
          { what: 'pg_sleep under way' },
        );
        await terminate(pid);
        return sleeping;
      });
      expect(String(await running)).toMatch(/terminat/);

      // An idle client: the pool drops it and says so, without the client object.
      const idle = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(handle.db);
      await terminate(idle.rows[0]!.pid);
      const line = await waitFor(() => lines.find((l) => l.includes('idle database connection failed')), {
        what: 'the idle connection logged',
      });
      expect(line).not.toContain('"client"');
      expect(line).not.toContain('connectionParameters');

      const after = await sql<{ one: number }>`select 1 as one`.execute(handle.db);
      expect(after.rows).toEqual([{ one: 1 }]);
      expect(crashes).toEqual([]);
    } finally {
      process.off('uncaughtExceptionMonitor', monitor);
    }
  });

  it('a transaction whose connection the server cuts fails with an error that says the database is unavailable', async () => {
    const url = testPostgresUrl('conn_cut_trx');
    pgSchemas.push(new URL(url).searchParams.get('schema')!);
    const handle = await createDatabase(url, { logger: createLogger({ level: 'silent' }) });
    handles.push(handle);
    const killerUrl = testPostgresUrl('conn_cut_trx_killer');
    pgSchemas.push(new URL(killerUrl).searchParams.get('schema')!);
    const killer = await open(killerUrl);
    const err = await handle.db
      .transaction()
      .execute(async (trx) => {
        const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx);
        await sql`select pg_terminate_backend(${rows[0]!.pid})`.execute(killer.db);
        // The next statement meets the cut; Kysely then rolls back on the same, ended client.
        await sql`select 1`.execute(trx);
      })
      .then(
        () => new Error('the transaction committed: the connection was not cut'),
        (e: unknown) => e,
      );
    // Whichever error Kysely throws (the statement's, or its ROLLBACK's on the ended client),
    // the api must read it as "unavailable" (503), never as a fault of its own (500).
    expect(isDatabaseUnavailable(err)).toBe(true);
    const after = await sql<{ one: number }>`select 1 as one`.execute(handle.db);
    expect(after.rows).toEqual([{ one: 1 }]);
  });
});
