import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { CompiledQuery, Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import { redactUrl, type Logger } from '../logger';
import { parsePostgresUrl } from '../postgres-url';
import type { Database } from './schema';

export type Dialect = 'sqlite' | 'postgres';

/** An open database: the Kysely instance plus what callers need to know about it. */
export interface DatabaseHandle {
  readonly db: Kysely<Database>;
  readonly dialect: Dialect;
  /** URL with any password removed, for logs. */
  readonly displayUrl: string;
  /** Closes the pool or file. Idempotent: later calls return the first call's promise. */
  close(): Promise<void>;
}

export interface CreateDatabaseOptions {
  /** Receives errors of idle pooled Postgres connections (which pg otherwise raises as process-fatal events). */
  logger?: Logger;
  /** Postgres pool size. @defaultValue 10 */
  poolSize?: number;
}

/** How long SQLite waits for another connection's write lock before SQLITE_BUSY. */
export const SQLITE_BUSY_TIMEOUT_MS = 5000;

const PG_INT8_OID = 20;

/**
 * Open the database named by a DATABASE_URL.
 *
 * - `sqlite:<path>` (also `sqlite://<path>` and `sqlite::memory:`): better-sqlite3; the parent
 *   directory is created; WAL, `busy_timeout` 5000 and `foreign_keys` on.
 * - `postgres://…` / `postgresql://…`: a pg Pool. `?relaxed_commits=off` turns off the second
 *   pool of relaxedDurability (needed behind a transaction-pooling proxy). An optional `?schema=<name>` selects a schema,
 *   created when absent, and set as the `search_path` of every pooled connection. INT8 columns
 *   (our epoch-millisecond timestamps, `count(*)`) arrive as JS numbers, via the pool's own
 *   `types`, so the process-global `pg.types` stays untouched.
 *
 * @throws Error for an unsupported URL or an invalid schema name; for Postgres with `?schema=`,
 *   the connection error when the server cannot be reached to create the schema.
 */
export async function createDatabase(
  url: string,
  options: CreateDatabaseOptions = {},
): Promise<DatabaseHandle> {
  if (url.startsWith('sqlite:')) return openSqlite(url);
  if (/^postgres(ql)?:\/\//.test(url)) return openPostgres(url, options);
  throw new Error(
    `unsupported database URL ${redactUrl(url)}: use sqlite:<path> (e.g. sqlite:./data/taskyard.db) or postgres://user@host:5432/db`,
  );
}

/** The file of a `sqlite:` URL (`:memory:` for an in-memory database). @throws Error for an empty path */
export function sqlitePath(url: string): string {
  let file = url.slice('sqlite:'.length);
  if (file.startsWith('//')) file = file.slice(2);
  if (file === '') throw new Error('sqlite URL has no path: use sqlite:<path> or sqlite::memory:');
  return file;
}

/** Distinct SQL texts kept prepared; the app issues a few dozen, so this only guards a runaway. */
const STATEMENT_CACHE_SIZE = 512;

/**
 * Kysely's SQLite driver prepares every statement afresh; compiling SQL was ~14 % of the
 * api's CPU under load (bench/RESULTS.md). Reusing a prepared statement is safe here
 * because Kysely runs one query at a time on its single connection, so a cached statement
 * is never re-entered while it is still iterating.
 */
function withStatementCache(sqlite: SQLite.Database): SQLite.Database {
  const cache = new Map<string, SQLite.Statement>();
  return new Proxy(sqlite, {
    get(target, prop, receiver) {
      if (prop === 'prepare') {
        return (source: string) => {
          let stmt = cache.get(source);
          if (!stmt) {
            stmt = target.prepare(source);
            if (cache.size < STATEMENT_CACHE_SIZE) cache.set(source, stmt);
          }
          return stmt;
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

function openSqlite(url: string): DatabaseHandle {
  const file = sqlitePath(url);
  const inMemory = file === ':memory:';
  if (!inMemory) fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const sqlite = new SQLite(file);
  try {
    // busy_timeout first: switching to WAL needs a lock another process may hold briefly.
    sqlite.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
    if (!inMemory) sqlite.pragma('journal_mode = WAL');
    // better-sqlite3 is built with SQLITE_DEFAULT_WAL_SYNCHRONOUS=1, so a reopened WAL database
    // would run at NORMAL: commits survive a killed process but not a power cut. A commit that
    // answers a client (202 Accepted) must be on disk, so every connection says FULL itself.
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('foreign_keys = ON');
  } catch (err) {
    sqlite.close();
    throw err;
  }
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
  sqliteInstances.add(db);
  return makeHandle(db, 'sqlite', url, async () => {
    if (sqlite.open) sqlite.close();
  });
}

/** Kysely instances over a better-sqlite3 file opened here (relaxedDurability, groupCommit). */
const sqliteInstances = new WeakSet<Kysely<Database>>();
/** Postgres: the instance whose sessions run with synchronous_commit off, per main instance. */
const relaxedInstances = new WeakMap<Kysely<Database>, Kysely<Database>>();

/** Whether `db` is a SQLite database opened by createDatabase (not a transaction on one). */
export function isSqliteInstance(db: Kysely<Database>): boolean {
  return sqliteInstances.has(db);
}

/**
 * Run `fn` with commits that do not wait for their own flush to disk. Inside a transaction,
 * or on a database not opened by createDatabase, `fn` simply runs on `db`.
 *
 * Only for writes whose loss in a power cut or server crash is the same as their never having
 * happened: an idempotency claim (its request had not been answered yet) or an outbox row's
 * "dispatched" mark (the relay adds the same job id again: ignored while BullMQ keeps the job,
 * refused by the fenced start of a finished resource otherwise).
 * Neither backend can lose such a write while keeping a later durable commit: WAL is a log,
 * and a durable commit flushes it up to itself, earlier relaxed commits included.
 *
 * - SQLite: the one connection is reserved and runs `fn` at synchronous = NORMAL (no fsync
 *   of its own; a killed process loses nothing, the file cannot be corrupted).
 * - Postgres: `fn` runs on a second, smaller pool whose sessions have synchronous_commit
 *   off; a server crash can lose the last few such commits, never a later synchronous one.
 *   Its writes are visible to other sessions at once, as usual.
 */
export async function relaxedDurability<T>(
  db: Kysely<Database>,
  fn: (db: Kysely<Database>) => Promise<T>,
): Promise<T> {
  const relaxed = relaxedInstances.get(db);
  if (relaxed) return fn(relaxed);
  if (!sqliteInstances.has(db)) return fn(db);
  // One reserved connection, so no other caller's commit runs while the pragma is lowered.
  return db.connection().execute(async (conn) => {
    await sql`pragma synchronous = NORMAL`.execute(conn);
    try {
      return await fn(conn);
    } finally {
      await sql`pragma synchronous = FULL`.execute(conn);
    }
  });
}

/** INT8 (counts, epoch milliseconds) as a JS number, for every pg connection taskyard opens. */
export const PG_TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === PG_INT8_OID && format !== 'binary'
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

async function openPostgres(url: string, options: CreateDatabaseOptions): Promise<DatabaseHandle> {
  const { connectionString, schema, relaxedCommits, displayUrl } = parsePostgresUrl(url);

  const poolSize = options.poolSize ?? 10;
  const pool = newPool(connectionString, poolSize, options.logger, displayUrl);

  if (schema !== null) {
    try {
      await ensureSchema(pool, schema);
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw new Error(`could not prepare schema "${schema}" on ${displayUrl}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  const searchPath = schema === null ? [] : [`set search_path to ${pg.escapeIdentifier(schema)}`];
  const db = postgresKysely(pool, searchPath);
  const closePool = async () => {
    if (!pool.ending && !pool.ended) await pool.end();
  };
  // Behind a transaction-pooling proxy (PgBouncer pool_mode=transaction) a session setting
  // would stay on a server connection that later carries someone's durable commit, so the
  // URL can turn the relaxed pool off; relaxedDurability then uses the main pool.
  if (!relaxedCommits) return makeHandle(db, 'postgres', displayUrl, closePool);
  // relaxedDurability's connections: the server acknowledges their commits before the WAL
  // is flushed. pg connects lazily and drops idle clients after 10 s, so an idle process
  // holds none of them.
  const relaxedPool = newPool(
    connectionString,
    Math.max(2, Math.ceil(poolSize / 2)),
    options.logger,
    displayUrl,
  );
  const relaxed = postgresKysely(relaxedPool, [...searchPath, 'set synchronous_commit to off']);
  relaxedInstances.set(db, relaxed);
  return makeHandle(db, 'postgres', displayUrl, async () => {
    try {
      await relaxed.destroy();
    } finally {
      await closePool();
    }
  });
}

function newPool(
  connectionString: string,
  max: number,
  logger: Logger | undefined,
  displayUrl: string,
): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    // A server that accepts TCP but never answers must not hang callers forever.
    connectionTimeoutMillis: 10_000,
    types: PG_TYPES,
  });
  // An idle client whose server connection dies is dropped by the pool; the next query
  // reconnects or reports the outage. pg-pool puts the client on the error: never log that.
  pool.on('error', (err: Error & { client?: unknown }) => {
    delete err.client;
    logger?.warn({ err, db: displayUrl }, 'idle database connection failed');
  });
  // pg-pool listens only on idle clients. A checked-out one (a query or transaction under
  // way) whose connection ends, as in a server restart, emits 'error' with nobody listening,
  // and Node ends the process. Its query already fails with that error, and the pool drops
  // the client when it comes back, so this listener only has to exist.
  pool.on('connect', (client) => {
    client.on('error', (err) =>
      logger?.debug({ err: { message: err.message }, db: displayUrl }, 'database connection in use ended'),
    );
    // A FATAL error (the server ends the session: a restart, pg_terminate_backend) fails the
    // query under way, but pg keeps the client "queryable" until the socket closes. Handed
    // back to the pool in between, it would go to the next caller, whose query would fail
    // too. Ending it now makes the pool drop it on release.
    (client as unknown as pg.Client).connection.on('errorMessage', (msg: { severity?: string }) => {
      if (msg.severity === 'FATAL' || msg.severity === 'PANIC') client.end().catch(() => undefined);
    });
  });
  return pool;
}

/** A Kysely over `pool` whose every new connection first runs `session` statements. */
function postgresKysely(pool: pg.Pool, session: readonly string[]): Kysely<Database> {
  return new Kysely<Database>({
    dialect: new PostgresDialect({
      pool,
      onCreateConnection:
        session.length === 0
          ? undefined
          : async (connection) => {
              for (const statement of session) await connection.executeQuery(CompiledQuery.raw(statement));
            },
    }),
  });
}

/**
 * Create the schema when absent. Checked first, because CREATE SCHEMA IF NOT EXISTS needs the
 * CREATE privilege even when the schema exists; serialised by an advisory lock, because two
 * processes creating it at once would otherwise collide on the catalog's unique index.
 */
async function ensureSchema(pool: pg.Pool, schema: string): Promise<void> {
  const exists = async (client: pg.PoolClient) =>
    (await client.query('select 1 from pg_namespace where nspname = $1', [schema])).rowCount === 1;
  const client = await pool.connect();
  try {
    if (await exists(client)) return;
    await client.query('begin');
    try {
      await client.query(`select pg_advisory_xact_lock(hashtext('taskyard:create-schema'))`);
      if (!(await exists(client))) await client.query(`create schema ${pg.escapeIdentifier(schema)}`);
      await client.query('commit');
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    }
  } finally {
    client.release();
  }
}

function makeHandle(
  db: Kysely<Database>,
  dialect: Dialect,
  displayUrl: string,
  releaseDriver: () => Promise<void>,
): DatabaseHandle {
  let closing: Promise<void> | undefined;
  const close = async () => {
    await db.destroy();
    // Kysely's destroy() does nothing when the handle never ran a query, but the file (or
    // the pool, which created the schema) is open all the same.
    await releaseDriver();
  };
  return Object.freeze({ db, dialect, displayUrl, close: () => (closing ??= close()) });
}
