import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import SQLite from 'better-sqlite3';
import { CompiledQuery, type Kysely } from 'kysely';
import pg from 'pg';
import { redactUrl } from '../logger';
import { parsePostgresUrl, type PostgresUrl } from '../postgres-url';
import { PG_TYPES, SQLITE_BUSY_TIMEOUT_MS, type Dialect } from './database';

/**
 * A consistent, read-only view of every application table, for backups.
 *
 * - SQLite: a SEPARATE read-only better-sqlite3 connection to the same file, inside one read
 *   transaction. WAL pins the snapshot at the transaction's first read, the app's own
 *   connection keeps writing, and nothing the app commits later becomes visible here.
 * - Postgres: a dedicated pg client (not the app's pool, whose slots serve requests) in
 *   `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`.
 *
 * Tables and column order come from introspecting the live schema, so a new migration is
 * backed up without code changes. Rows are read in primary-key order by keyset pagination in
 * chunks, yielding to the event loop between chunks: better-sqlite3 is synchronous, and a long
 * scan must not stall BullMQ lock renewal or HTTP answers.
 */

/** The migration ledger: owned by the migration runner, never backed up or restored. */
export const LEDGER_TABLE = 'schema_migrations';

/** Rows per keyset page. @defaultValue 2000 */
export const DEFAULT_CHUNK_ROWS = 2000;

/** A value as stored in an archive: both backends read our columns as these. */
export type CellValue = string | number | boolean | null;

export interface TableShape {
  name: string;
  /** Every column, in the table's declared order. */
  columns: string[];
  /** Primary-key columns, in key order (never empty: see introspectTables). */
  primaryKey: string[];
}

export interface Snapshot {
  readonly backend: Dialect;
  /** Name of the latest applied migration. */
  readonly schemaVersion: string;
  /** Application tables (all but the ledger), sorted by name. */
  readonly tables: readonly TableShape[];
  /**
   * The rows of `table`, `columns` in that order, in primary-key order, `chunkRows` at a time.
   * Each chunk is read as the consumer asks for it, after a turn of the event loop.
   */
  chunks(table: TableShape, columns: readonly string[], chunkRows?: number): AsyncGenerator<CellValue[][]>;
  /** Ends the read transaction and closes the connection. Idempotent. */
  close(): Promise<void>;
}

/** Runs one statement and returns its rows as objects (introspection) or arrays (data). */
interface Reader {
  objects(text: string, params?: readonly unknown[]): Promise<Record<string, unknown>[]>;
  arrays(text: string, params?: readonly unknown[]): Promise<unknown[][]>;
}

/** A problem with the database being snapshotted (not migrated, table without a key). */
export class SnapshotError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SnapshotError';
  }
}

/**
 * Open a snapshot of the database named by a DATABASE_URL (see createDatabase for the forms).
 * @throws SnapshotError for an in-memory SQLite database (no second connection can see it), a
 *   database without applied migrations, or an application table without a primary key.
 * @throws the driver's error when the database cannot be opened.
 */
export async function openSnapshot(databaseUrl: string): Promise<Snapshot> {
  if (databaseUrl.startsWith('sqlite:')) return openSqliteSnapshot(databaseUrl);
  if (/^postgres(ql)?:\/\//.test(databaseUrl)) return openPostgresSnapshot(databaseUrl);
  throw new SnapshotError(`unsupported database URL ${redactUrl(databaseUrl)}`);
}

function openSqliteSnapshot(url: string): Promise<Snapshot> {
  let file = url.slice('sqlite:'.length);
  if (file.startsWith('//')) file = file.slice(2);
  if (file === ':memory:' || file === '') {
    throw new SnapshotError('an in-memory SQLite database cannot be backed up: use a file database');
  }
  const conn = new SQLite(file, { readonly: true, fileMustExist: true });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    if (conn.inTransaction) conn.exec('rollback');
    conn.close();
  };
  const reader: Reader = {
    objects: async (text, params = []) => conn.prepare(text).all(...params) as Record<string, unknown>[],
    arrays: async (text, params = []) =>
      conn
        .prepare(text)
        .raw(true)
        .all(...params) as unknown[][],
  };
  return (async () => {
    try {
      conn.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
      // A deferred BEGIN: the snapshot is pinned by the first read below (introspection).
      conn.exec('begin');
      return await describe('sqlite', reader, close);
    } catch (err) {
      await close();
      throw err;
    }
  })();
}

async function openPostgresSnapshot(url: string): Promise<Snapshot> {
  let target: PostgresUrl;
  try {
    target = parsePostgresUrl(url);
  } catch (err) {
    throw new SnapshotError((err as Error).message);
  }
  const { schema } = target;
  const client = new pg.Client({
    connectionString: target.connectionString,
    connectionTimeoutMillis: 10_000,
    // Same representation as the app's pool: INT8 as a JS number.
    types: PG_TYPES,
  });
  // A connection dying mid-backup surfaces as the failing query; the listener only keeps pg's
  // 'error' event from being process-fatal.
  client.on('error', () => undefined);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await client.end().catch(() => undefined);
  };
  const reader: Reader = {
    objects: async (text, params = []) =>
      (await client.query(text, [...params])).rows as Record<string, unknown>[],
    arrays: async (text, params = []) =>
      (await client.query({ text, values: [...params], rowMode: 'array' })).rows as unknown[][],
  };
  try {
    await client.connect();
    if (schema !== null) await client.query(`set search_path to ${pg.escapeIdentifier(schema)}`);
    await client.query('begin isolation level repeatable read read only');
    return await describe('postgres', reader, close);
  } catch (err) {
    await close();
    throw err;
  }
}

async function describe(backend: Dialect, reader: Reader, close: () => Promise<void>): Promise<Snapshot> {
  const tables = await introspectTables(backend, reader.objects);
  const schemaVersion = await readSchemaVersion(backend, reader.objects);
  const quote = (id: string) => `"${id.replace(/"/g, '""')}"`;
  const placeholder = (i: number) => (backend === 'postgres' ? `$${i + 1}` : '?');

  async function* chunks(
    table: TableShape,
    columns: readonly string[],
    chunkRows = DEFAULT_CHUNK_ROWS,
  ): AsyncGenerator<CellValue[][]> {
    // Keyset: the last row's primary key is the next page's lower bound. Key columns not
    // asked for are selected after the wanted ones and cut off again.
    const extra = table.primaryKey.filter((c) => !columns.includes(c));
    const keyIndex = table.primaryKey.map((c) => {
      const i = columns.indexOf(c);
      return i >= 0 ? i : columns.length + extra.indexOf(c);
    });
    const select = [...columns, ...extra].map(quote).join(', ');
    const key = `(${table.primaryKey.map(quote).join(', ')})`;
    const order = table.primaryKey.map(quote).join(', ');
    let after: unknown[] | undefined;
    for (;;) {
      await yieldToEventLoop();
      const where =
        after === undefined ? '' : ` where ${key} > (${after.map((_, i) => placeholder(i)).join(', ')})`;
      const rows = await reader.arrays(
        `select ${select} from ${quote(table.name)}${where} order by ${order} limit ${chunkRows}`,
        after ?? [],
      );
      if (rows.length === 0) return;
      const last = rows[rows.length - 1]!;
      after = keyIndex.map((i) => last[i]);
      yield (extra.length === 0 ? rows : rows.map((r) => r.slice(0, columns.length))) as CellValue[][];
      if (rows.length < chunkRows) return;
    }
  }

  return { backend, schemaVersion, tables, chunks, close };
}

/**
 * Application tables of a database (every table but the ledger), sorted by name, with their
 * columns in declared order and their primary keys.
 * @throws SnapshotError when a table has no primary key (rows could not be paged in a stable order).
 */
export async function introspectTables(dialect: Dialect, query: Reader['objects']): Promise<TableShape[]> {
  const tables: TableShape[] = [];
  if (dialect === 'sqlite') {
    const names = await query(
      `select name from sqlite_master where type = 'table' and name not like 'sqlite\\_%' escape '\\' and name <> ?`,
      [LEDGER_TABLE],
    );
    for (const { name } of names as Array<{ name: string }>) {
      const info = (await query('select name, pk from pragma_table_info(?) order by cid', [name])) as Array<{
        name: string;
        pk: number;
      }>;
      tables.push({
        name,
        columns: info.map((c) => c.name),
        primaryKey: info
          .filter((c) => c.pk > 0)
          .sort((a, b) => a.pk - b.pk)
          .map((c) => c.name),
      });
    }
  } else {
    const columns = (await query(
      `select c.table_name, c.column_name
         from information_schema.columns c
         join information_schema.tables t
           on t.table_schema = c.table_schema and t.table_name = c.table_name
        where c.table_schema = current_schema() and t.table_type = 'BASE TABLE' and c.table_name <> $1
        order by c.table_name, c.ordinal_position`,
      [LEDGER_TABLE],
    )) as Array<{ table_name: string; column_name: string }>;
    const keys = (await query(
      `select tc.table_name, k.column_name
         from information_schema.table_constraints tc
         join information_schema.key_column_usage k
           on k.constraint_schema = tc.constraint_schema and k.constraint_name = tc.constraint_name
          and k.table_name = tc.table_name
        where tc.table_schema = current_schema() and tc.constraint_type = 'PRIMARY KEY'
        order by tc.table_name, k.ordinal_position`,
    )) as Array<{ table_name: string; column_name: string }>;
    const byName = new Map<string, TableShape>();
    for (const c of columns) {
      let t = byName.get(c.table_name);
      if (t === undefined)
        byName.set(c.table_name, (t = { name: c.table_name, columns: [], primaryKey: [] }));
      t.columns.push(c.column_name);
    }
    for (const k of keys) byName.get(k.table_name)?.primaryKey.push(k.column_name);
    tables.push(...byName.values());
  }
  // Code-unit order, not the database's collation: both backends list tables identically.
  tables.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const t of tables) {
    if (t.primaryKey.length === 0) {
      throw new SnapshotError(
        `table ${t.name} has no primary key: every application table needs one to be backed up in a stable order`,
      );
    }
  }
  return tables;
}

async function readSchemaVersion(dialect: Dialect, query: Reader['objects']): Promise<string> {
  const exists =
    dialect === 'sqlite'
      ? await query(`select 1 from sqlite_master where type = 'table' and name = ?`, [LEDGER_TABLE])
      : await query(
          `select 1 from information_schema.tables where table_schema = current_schema() and table_name = $1`,
          [LEDGER_TABLE],
        );
  const rows =
    exists.length === 0 ? [] : await query(`select name from ${LEDGER_TABLE} order by name desc limit 1`);
  const name = rows[0]?.name;
  if (typeof name !== 'string') {
    throw new SnapshotError(
      'the database has no applied migrations: run taskyard migrate before backing it up',
    );
  }
  return name;
}

/** introspectTables over an open Kysely handle (used on a restore target). */
export function introspectKysely(db: Kysely<unknown>, dialect: Dialect): Promise<TableShape[]> {
  return introspectTables(dialect, async (text, params = []) => {
    const r = await db.executeQuery<Record<string, unknown>>(CompiledQuery.raw(text, [...params]));
    return [...r.rows];
  });
}
