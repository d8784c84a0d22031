import { sql, type Kysely } from 'kysely';
import { MigrationIntegrityError } from '../errors';
import type { Logger } from '../logger';
import type { DatabaseHandle, Dialect } from './database';

/**
 * The migration runner (CONVENTIONS.md "Migrations are append-only and numbered").
 *
 * Each migration runs in its own transaction together with its ledger row in
 * `schema_migrations`, under a lock that serialises every runner on the same database:
 * Postgres takes a transaction-scoped advisory lock keyed by the schema; SQLite takes the
 * write lock up front (BEGIN IMMEDIATE). The ledger is re-read under the lock, so processes
 * starting together apply each migration exactly once.
 */

export interface Migration {
  /** `NNNN_name`, the file name without extension; migrations apply in this order. */
  name: string;
  /** SHA-256 hex of the migration's source; an applied migration whose checksum changes is refused. */
  checksum: string;
  up(db: Kysely<any>, dialect: Dialect): Promise<void>;
}

export interface MigrationStatus {
  /** Names in the ledger, in the order they were applied. */
  applied: string[];
  /** Migrations of the code not yet applied, in order. */
  pending: string[];
  /** Integrity problems; non-empty means migrateToLatest refuses to run. */
  problems: string[];
}

interface LedgerRow {
  name: string;
  checksum: string;
}

const LEDGER = 'schema_migrations';

/** How long a SQLite runner waits for another runner's write lock. @defaultValue 60 s */
const SQLITE_LOCK_WAIT_MS = 60_000;

/**
 * Apply pending migrations in order, each in its own transaction with its ledger row.
 * Safe when several processes start at once.
 * @returns the names this call applied (empty when up to date).
 * @throws MigrationIntegrityError listing every problem, when an applied migration's checksum
 *   changed, the ledger names a migration the code does not have (database newer than code),
 *   or a pending migration sorts before an applied one. Nothing is applied then.
 * @throws the migration's own error when it fails; its transaction (DDL included) is rolled back.
 */
export async function migrateToLatest(
  handle: DatabaseHandle,
  migrations: readonly Migration[],
  logger?: Logger,
): Promise<string[]> {
  assertWellFormed(migrations);
  const applied: string[] = [];
  for (;;) {
    const name = await withMigrationLock(handle, async (db) => {
      await createLedger(db);
      const status = compare(await readLedger(db), migrations);
      if (status.problems.length > 0) {
        throw new MigrationIntegrityError(
          `refusing to migrate ${handle.displayUrl}:\n${status.problems.map((p) => `  - ${p}`).join('\n')}`,
        );
      }
      const next = migrations.find((m) => m.name === status.pending[0]);
      if (next === undefined) return undefined;
      await next.up(db, handle.dialect);
      await db
        .insertInto(LEDGER)
        .values({ name: next.name, checksum: next.checksum, applied_at: Date.now() })
        .execute();
      return next.name;
    });
    if (name === undefined) break;
    applied.push(name);
    logger?.info({ migration: name }, 'migration applied');
  }
  if (applied.length === 0) logger?.debug({ db: handle.displayUrl }, 'database schema is up to date');
  return applied;
}

/** What migrateToLatest would do, without changing anything (the ledger may not exist yet). */
export async function migrationStatus(
  handle: DatabaseHandle,
  migrations: readonly Migration[],
): Promise<MigrationStatus> {
  assertWellFormed(migrations);
  const db = handle.db as unknown as Kysely<any>;
  const rows = (await ledgerExists(db, handle.dialect)) ? await readLedger(db) : [];
  return compare(rows, migrations);
}

function compare(rows: readonly LedgerRow[], migrations: readonly Migration[]): MigrationStatus {
  const byName = new Map(migrations.map((m) => [m.name, m]));
  const appliedNames = new Set(rows.map((r) => r.name));
  const problems: string[] = [];
  for (const row of rows) {
    const m = byName.get(row.name);
    if (m === undefined) {
      problems.push(
        `migration ${row.name} is applied but unknown to this code: the database is newer than the code`,
      );
    } else if (m.checksum !== row.checksum) {
      problems.push(
        `migration ${row.name} changed after it was applied (checksum ${row.checksum} applied, ${m.checksum} now): migrations are append-only, add a new one`,
      );
    }
  }
  const pending = migrations.filter((m) => !appliedNames.has(m.name)).map((m) => m.name);
  const lastApplied = migrations.reduce((last, m, i) => (appliedNames.has(m.name) ? i : last), -1);
  for (const name of pending) {
    const later = migrations[lastApplied];
    if (later !== undefined && migrations.findIndex((m) => m.name === name) < lastApplied) {
      problems.push(`migration ${name} is pending but the later ${later.name} is already applied`);
    }
  }
  return { applied: rows.map((r) => r.name), pending, problems };
}

function assertWellFormed(migrations: readonly Migration[]): void {
  const seen = new Set<string>();
  let previous = '';
  for (const m of migrations) {
    if (seen.has(m.name)) throw new Error(`migration ${m.name} is listed twice`);
    if (m.name <= previous)
      throw new Error(`migration ${m.name} is listed after ${previous}: keep them in order`);
    seen.add(m.name);
    previous = m.name;
  }
}

async function createLedger(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable(LEDGER)
    .ifNotExists()
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('checksum', 'text', (c) => c.notNull())
    .addColumn('applied_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('schema_migrations_pkey', ['name'])
    .execute();
}

async function readLedger(db: Kysely<any>): Promise<LedgerRow[]> {
  return db.selectFrom(LEDGER).select(['name', 'checksum']).orderBy('applied_at').orderBy('name').execute();
}

async function ledgerExists(db: Kysely<any>, dialect: Dialect): Promise<boolean> {
  if (dialect === 'postgres') {
    const r = await sql<{ t: string | null }>`select to_regclass(${LEDGER})::text as t`.execute(db);
    return r.rows[0]?.t != null;
  }
  const r = await sql<{
    n: number;
  }>`select count(*) as n from sqlite_master where type = 'table' and name = ${LEDGER}`.execute(db);
  return (r.rows[0]?.n ?? 0) > 0;
}

/** Run `fn` in a transaction that excludes every other migration runner on this database. */
async function withMigrationLock<T>(handle: DatabaseHandle, fn: (db: Kysely<any>) => Promise<T>): Promise<T> {
  const db = handle.db as unknown as Kysely<any>;
  if (handle.dialect === 'postgres') {
    return db.transaction().execute(async (trx) => {
      // One lock per schema: test schemas (and tenants) on one server do not wait for each other.
      await sql`select pg_advisory_xact_lock(hashtext('taskyard:migrations:' || coalesce(current_schema(), '')))`.execute(
        trx,
      );
      return fn(trx);
    });
  }
  return db.connection().execute(async (conn) => {
    await beginImmediate(conn);
    let result: T;
    try {
      result = await fn(conn);
    } catch (err) {
      await sql`rollback`.execute(conn).catch(() => undefined);
      throw err;
    }
    await sql`commit`.execute(conn);
    return result;
  });
}

/**
 * BEGIN IMMEDIATE, waiting asynchronously for the write lock. better-sqlite3 waits for a busy
 * lock synchronously, which would block this process's event loop — and, when the holder is
 * another handle in this same process, deadlock until the timeout. So the wait is done here:
 * busy_timeout 0 for the attempt, then a short pause and a retry until the deadline.
 */
async function beginImmediate(conn: Kysely<any>): Promise<void> {
  const deadline = performance.now() + SQLITE_LOCK_WAIT_MS;
  const previous = await sql<{ timeout: number }>`pragma busy_timeout`.execute(conn);
  const restore = previous.rows[0]?.timeout ?? 5000;
  await sql.raw('pragma busy_timeout = 0').execute(conn);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await sql`begin immediate`.execute(conn);
        return;
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'SQLITE_BUSY' || performance.now() > deadline) throw err;
      }
      // A retry pause, bounded by the deadline above; it drives no work of its own.
      const pauseMs = Math.min(5 * 2 ** attempt, 100) * (0.5 + Math.random());
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  } finally {
    await sql.raw(`pragma busy_timeout = ${Number(restore)}`).execute(conn);
  }
}
