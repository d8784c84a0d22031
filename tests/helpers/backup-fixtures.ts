import SQLite from 'better-sqlite3';
import { sql, type Kysely } from 'kysely';
import { loadMigrations } from '../../migrations/index';
import { TableDigest } from '../../shared/backup-archive';
import { introspectKysely, openSnapshot } from '../../shared/db/backup-snapshot';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { migrateToLatest } from '../../shared/db/migrate';

/** Fixtures for backup archive tests: seeded databases, read-backs, disposal. */

export const LONG_TEXT = 'λ'.repeat(10_000) + 'x'.repeat(60_000);
export const UNICODE_TEXT = 'zürich — 東京 — 🚀 "quoted" \\ back\nnew line\ttab';

/** Open a fresh database at `url`, migrated to the latest schema. */
export async function openMigrated(url: string): Promise<DatabaseHandle> {
  const handle = await createDatabase(url);
  await migrateToLatest(handle, await loadMigrations());
  return handle;
}

/**
 * Rows in every application table: NULLs, unicode, a 70k-character string, numbers near the
 * edges of the epoch-millisecond range, and `n` outbox rows (for multi-chunk reads).
 */
export async function seedSmallDatabase(handle: DatabaseHandle, n = 25): Promise<void> {
  const db = handle.db;
  await db
    .insertInto('api_keys')
    .values([
      {
        id: 'k1',
        name: UNICODE_TEXT,
        key_hash: 'a'.repeat(64),
        scopes: 'admin',
        created_at: 1_767_225_600_000,
        revoked_at: null,
        last_used_at: null,
      },
      {
        id: 'k2',
        name: 'ci',
        key_hash: 'b'.repeat(64),
        scopes: 'read,write',
        created_at: 0,
        revoked_at: 4_102_444_800_000,
        last_used_at: 1,
      },
    ])
    .execute();
  await db
    .insertInto('idempotency_keys')
    .values([
      {
        principal_id: 'k1',
        key: 'abc',
        fingerprint: 'f'.repeat(64),
        state: 'completed',
        claim_token: 't1',
        lease_expires_at: null,
        response_status: 202,
        response_body: JSON.stringify({ id: 'b1', label: UNICODE_TEXT }),
        response_location: '/v1/backups/b1',
        created_at: 10,
        expires_at: 20,
      },
      {
        principal_id: 'k1',
        key: 'in-flight',
        fingerprint: 'e'.repeat(64),
        state: 'in_flight',
        claim_token: 't2',
        lease_expires_at: 30,
        response_status: null,
        response_body: null,
        response_location: null,
        created_at: 11,
        expires_at: 21,
      },
    ])
    .execute();
  const outbox = Array.from({ length: n }, (_, i) => ({
    id: `o-${String(i).padStart(4, '0')}`,
    queue: 'backups',
    job_name: 'create-backup',
    job_id: `backup-${i}`,
    payload: i === 0 ? LONG_TEXT : JSON.stringify({ i, text: UNICODE_TEXT }),
    created_at: 1_700_000_000_000 + i,
    dispatched_at: i % 3 === 0 ? null : 1_700_000_000_500 + i,
    attempts: i % 4,
    last_error: i % 5 === 0 ? `boom ${UNICODE_TEXT}` : null,
  }));
  await db.insertInto('outbox').values(outbox).execute();
  await db
    .insertInto('settings')
    .values([
      { key: 'schedule:backup', value: '{"every_ms":86400000}', updated_at: 5 },
      { key: 'ünïcode', value: UNICODE_TEXT, updated_at: 6 },
    ])
    .execute();
}

export type TableRows = Record<string, Array<Record<string, unknown>>>;

/** Every application table's rows, in a backend-independent order (sorted by their JSON). */
export async function readAllRows(handle: DatabaseHandle): Promise<TableRows> {
  const out: TableRows = {};
  const db = handle.db as unknown as Kysely<any>;
  for (const { name } of await introspectKysely(db, handle.dialect)) {
    const rows = (await db.selectFrom(name).selectAll().execute()) as Array<Record<string, unknown>>;
    out[name] = rows
      .map((r) => ({ json: JSON.stringify(r), r }))
      .sort((a, b) => (a.json < b.json ? -1 : a.json > b.json ? 1 : 0))
      .map((x) => x.r);
  }
  return out;
}

/**
 * The row counts of seedSmallDatabase(n) for every application table of the code's schema
 * (tables it does not fill, such as those of later migrations, hold 0 rows).
 */
export async function seededCounts(n = 25): Promise<Record<string, number>> {
  const handle = await openMigrated('sqlite::memory:');
  try {
    const seeded: Record<string, number> = { api_keys: 2, idempotency_keys: 2, outbox: n, settings: 2 };
    const tables = await introspectKysely(handle.db as unknown as Kysely<any>, 'sqlite');
    return Object.fromEntries(tables.map((t) => [t.name, seeded[t.name] ?? 0]));
  } finally {
    await handle.close();
  }
}

/** Every table of readAllRows with no rows. */
export function emptyTables(counts: Record<string, number>): TableRows {
  return Object.fromEntries(Object.keys(counts).map((t) => [t, []]));
}

/** Row counts and content checksums read straight from a database (not from any archive). */
export async function checksumsOf(
  url: string,
): Promise<{ rowCounts: Record<string, number>; contentSha256: Record<string, string> }> {
  const snapshot = await openSnapshot(url);
  const rowCounts: Record<string, number> = {};
  const contentSha256: Record<string, string> = {};
  try {
    for (const t of snapshot.tables) {
      const d = new TableDigest();
      for await (const rows of snapshot.chunks(t, t.columns)) for (const r of rows) d.add(r);
      rowCounts[t.name] = d.count;
      contentSha256[t.name] = d.hex();
    }
  } finally {
    await snapshot.close();
  }
  return { rowCounts, contentSha256 };
}

/**
 * Insert `n` outbox rows fast: SQLite through one prepared statement in one transaction on a
 * side connection, Postgres with INSERT … SELECT generate_series.
 */
export async function seedLargeOutbox(handle: DatabaseHandle, url: string, n: number): Promise<void> {
  if (handle.dialect === 'sqlite') {
    const conn = new SQLite(url.slice('sqlite:'.length));
    try {
      conn.pragma('busy_timeout = 5000');
      const insert = conn.prepare(
        `insert into outbox (id, queue, job_name, job_id, payload, created_at, dispatched_at, attempts, last_error)
         values (?, 'backups', 'create-backup', ?, ?, ?, ?, ?, null)`,
      );
      conn.transaction(() => {
        for (let i = 0; i < n; i++) {
          const id = `o${String(i).padStart(8, '0')}`;
          insert.run(
            id,
            `backup-${i}`,
            `{"i":${i},"note":"payload ${i}"}`,
            1_700_000_000_000 + i,
            i % 2 ? null : i,
            i % 7,
          );
        }
      })();
    } finally {
      conn.close();
    }
    return;
  }
  await sql`insert into outbox (id, queue, job_name, job_id, payload, created_at, dispatched_at, attempts, last_error)
    select 'o' || lpad(i::text, 8, '0'), 'backups', 'create-backup', 'backup-' || i,
           '{"i":' || i || ',"note":"payload ' || i || '"}', 1700000000000 + i,
           case when i % 2 = 1 then null else i end, i % 7, null
      from generate_series(0, ${n - 1}::int) as i`.execute(handle.db);
}
