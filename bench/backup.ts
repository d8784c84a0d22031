/**
 * Backup speed: writeBackupArchive next to the stock tools, in the same run, on the same data.
 *
 * - SQLite: a migrated database whose `outbox` table is filled to BENCH_BACKUP_MB (default
 *   1024) MiB; reference = `sqlite3 <db> ".backup <tmp>"` then `gzip -c <tmp> > out.gz`,
 *   both steps timed together.
 * - Postgres: the same volume (BENCH_BACKUP_PG_MB, default 1024) in a private schema;
 *   reference = `pg_dump -Fc --schema=<schema>`.
 *
 * MB/s is of the source size (MiB): SQLite = the database file (page_count × page_size, WAL
 * checkpointed, all tables and indexes); Postgres = sum of pg_total_relation_size over the
 * schema's tables (heap, TOAST and indexes). Everything is generated fresh on each run and
 * deleted afterwards.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import { loadMigrations } from '../migrations/index';
import { writeBackupArchive } from '../shared/backup-archive-writer';
import { createDatabase } from '../shared/db/database';
import { migrateToLatest } from '../shared/db/migrate';
import { makeTempDir, removeTempDir, timeCommand } from './child-processes';
import type { Figure } from './results';

const PG_BASE = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const MiB = 2 ** 20;

/**
 * One outbox payload: ~950 bytes of JSON whose `notes` are 26 random 32-hex-digit words, so it
 * compresses about as well as the Postgres rows (md5 words) do; not a repeated string gzip
 * would make trivial.
 */
function payload(i: number): string {
  const hex = randomBytes(416).toString('hex');
  const words: string[] = [];
  for (let k = 0; k < hex.length; k += 32) words.push(hex.slice(k, k + 32));
  return JSON.stringify({ backup_id: randomUUID(), label: `bench ${i}`, notes: words.join(' ') });
}

const outboxId = (i: number) => `ob-${String(i).padStart(10, '0')}`;

async function migrate(url: string): Promise<void> {
  const handle = await createDatabase(url);
  try {
    await migrateToLatest(handle, await loadMigrations());
  } finally {
    await handle.close();
  }
}

/** Fill `outbox` in one transaction until the file reaches `targetBytes`; returns the row count. */
function fillSqlite(file: string, targetBytes: number): number {
  const db = new SQLite(file);
  try {
    // Generation only: no journal and no syncs while filling; WAL (the app's mode) is restored after.
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    const insert = db.prepare(
      `insert into outbox (id, queue, job_name, job_id, payload, created_at, dispatched_at, attempts, last_error)
       values (?, 'backups', 'create-backup', ?, ?, ?, ?, 1, null)`,
    );
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const base = Date.UTC(2026, 0, 1);
    let rows = 0;
    db.transaction(() => {
      for (;;) {
        for (let k = 0; k < 10_000; k++, rows++) {
          insert.run(outboxId(rows), `backup-${randomUUID()}`, payload(rows), base + rows, base + rows + 5);
        }
        if ((db.pragma('page_count', { simple: true }) as number) * pageSize >= targetBytes) break;
      }
    })();
    db.pragma('journal_mode = WAL');
    db.pragma('wal_checkpoint(TRUNCATE)');
    return rows;
  } finally {
    db.close();
  }
}

async function fillPostgres(client: pg.Client, schema: string, targetBytes: number): Promise<number> {
  const q = pg.escapeIdentifier(schema);
  let rows = 0;
  const batch = 25_000;
  for (;;) {
    await client.query(
      `insert into ${q}.outbox (id, queue, job_name, job_id, payload, created_at, dispatched_at, attempts, last_error)
       select 'ob-' || lpad(i::text, 10, '0'), 'backups', 'create-backup', 'backup-' || md5('j' || i)::uuid,
              json_build_object('backup_id', md5(i::text)::uuid, 'label', 'bench ' || i,
                'notes', array_to_string(array(select md5((i * 32 + k)::text) from generate_series(1, 26) k), ' '))::text,
              $2::bigint + i, $2::bigint + i + 5, 1, null
         from generate_series($1::bigint, $1::bigint + ${batch - 1}) i`,
      [rows, Date.UTC(2026, 0, 1)],
    );
    rows += batch;
    if ((await pgSchemaBytes(client, schema)) >= targetBytes) return rows;
  }
}

async function pgSchemaBytes(client: pg.Client, schema: string): Promise<number> {
  const r = await client.query<{ bytes: string }>(
    `select coalesce(sum(pg_total_relation_size(c.oid)), 0)::text as bytes
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and c.relkind = 'r'`,
    [schema],
  );
  return Number(r.rows[0]?.bytes ?? 0);
}

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [(performance.now() - t0) / 1000, v];
}

function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

const mb = (bytes: number) => bytes / MiB;
const fmtMiB = (bytes: number) => `${mb(bytes).toFixed(0)} MiB`;

export interface BackupBench {
  figures: Figure[];
  notes: string[];
}

async function benchSqlite(targetBytes: number): Promise<{ figure: Figure; notes: string[] }> {
  const dir = makeTempDir('backup-sqlite');
  try {
    const file = path.join(dir, 'source.db');
    await migrate(`sqlite:${file}`);
    const t0 = performance.now();
    const rows = fillSqlite(file, targetBytes);
    const source = fs.statSync(file).size;
    console.log(
      `  sqlite: ${rows.toLocaleString('en-US')} outbox rows, ${fmtMiB(source)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    const copy = path.join(dir, 'copy.db');
    const gz = path.join(dir, 'copy.db.gz');
    const backupSecs = await timeCommand('sqlite3', [file, `.backup '${copy}'`]);
    const out = fs.openSync(gz, 'w');
    let gzipSecs: number;
    try {
      gzipSecs = await timeCommand('gzip', ['-c', copy], { stdio: ['ignore', out, 'pipe'] });
    } finally {
      fs.closeSync(out);
    }
    const refSecs = backupSecs + gzipSecs;
    const refSize = fs.statSync(gz).size;
    fs.rmSync(copy);
    fs.rmSync(gz);
    console.log(
      `  sqlite3 .backup + gzip: ${refSecs.toFixed(1)} s (${backupSecs.toFixed(1)} + ${gzipSecs.toFixed(1)}), ${fmtMiB(refSize)}`,
    );

    const [secs, result] = await timed(() =>
      writeBackupArchive(`sqlite:${file}`, { dir: path.join(dir, 'archives'), fileName: 'bench.ndjson.gz' }),
    );
    console.log(`  writeBackupArchive: ${secs.toFixed(1)} s, ${fmtMiB(result.sizeBytes)}`);
    return {
      figure: {
        name: `writeBackupArchive, SQLite ${fmtMiB(source)} (${rows.toLocaleString('en-US')} outbox rows)`,
        value: mb(source) / secs,
        unit: 'MiB/s',
        reference: { name: '`sqlite3 .backup` + `gzip -c`, timed together', value: mb(source) / refSecs },
        targetRatio: 0.8,
      },
      notes: [
        `SQLite: writeBackupArchive ${secs.toFixed(1)} s → ${fmtMiB(result.sizeBytes)} archive; reference ${refSecs.toFixed(1)} s (.backup ${backupSecs.toFixed(1)} s + gzip ${gzipSecs.toFixed(1)} s) → ${fmtMiB(refSize)} .gz.`,
      ],
    };
  } finally {
    removeTempDir(dir);
  }
}

async function benchPostgres(targetBytes: number): Promise<{ figure: Figure; notes: string[] }> {
  const schema = `bench_backup_${process.pid}_${Date.now()}`;
  const url = `${PG_BASE}?schema=${schema}`;
  const dir = makeTempDir('backup-pg');
  const client = new pg.Client({ connectionString: PG_BASE });
  await client.connect();
  try {
    await migrate(url);
    const t0 = performance.now();
    const rows = await fillPostgres(client, schema, targetBytes);
    // Set hint bits and the visibility map now, and flush, so neither variant pays for them.
    await client.query(`vacuum (freeze, analyze) ${pg.escapeIdentifier(schema)}.outbox`);
    await client.query('checkpoint');
    const source = await pgSchemaBytes(client, schema);
    console.log(
      `  postgres: ${rows.toLocaleString('en-US')} outbox rows, ${fmtMiB(source)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    const dump = path.join(dir, 'bench.dump');
    const refSecs = await timeCommand('pg_dump', ['-Fc', `--schema=${schema}`, '-f', dump, '-d', PG_BASE]);
    const refSize = fs.statSync(dump).size;
    fs.rmSync(dump);
    console.log(`  pg_dump -Fc: ${refSecs.toFixed(1)} s, ${fmtMiB(refSize)}`);

    const [secs, result] = await timed(() =>
      writeBackupArchive(url, { dir: path.join(dir, 'archives'), fileName: 'bench.ndjson.gz' }),
    );
    console.log(`  writeBackupArchive: ${secs.toFixed(1)} s, ${fmtMiB(result.sizeBytes)}`);
    return {
      figure: {
        name: `writeBackupArchive, Postgres ${fmtMiB(source)} (${rows.toLocaleString('en-US')} outbox rows)`,
        value: mb(source) / secs,
        unit: 'MiB/s',
        reference: { name: '`pg_dump -Fc --schema=<schema>`', value: mb(source) / refSecs },
        targetRatio: 0.8,
      },
      notes: [
        `Postgres: writeBackupArchive ${secs.toFixed(1)} s → ${fmtMiB(result.sizeBytes)} archive; pg_dump ${refSecs.toFixed(1)} s → ${fmtMiB(refSize)} dump.`,
      ],
    };
  } finally {
    await client.query(`drop schema if exists ${pg.escapeIdentifier(schema)} cascade`).catch(() => undefined);
    await client.end();
    removeTempDir(dir);
  }
}

/**
 * Disk needed, as a multiple of the source size: SQLite = the database, its `.backup` copy and
 * two compressed archives; Postgres (same disk here) = the table, its WAL and two archives.
 * Scaled down, with a note, when the temp dir is short of space.
 */
function plan(wantSqlite: number, wantPg: number): { sqlite: number; pg: number; note?: string } {
  const free = freeBytes(os.tmpdir()) - 2 * 1024 * MiB;
  const need = 3.5 * wantSqlite + 3 * wantPg;
  if (need <= free) return { sqlite: wantSqlite, pg: wantPg };
  const scale = Math.max(free, 0) / need;
  return {
    sqlite: Math.floor(wantSqlite * scale),
    pg: Math.floor(wantPg * scale),
    note: `Scaled down to ${(scale * 100).toFixed(0)} % of the requested size: ${fmtMiB(free)} free in ${os.tmpdir()} (after a 2 GiB margin), ${fmtMiB(need)} needed.`,
  };
}

export async function benchBackup(): Promise<BackupBench> {
  const wantSqlite = Number(process.env.BENCH_BACKUP_MB ?? 1024) * MiB;
  const wantPg = Number(process.env.BENCH_BACKUP_PG_MB ?? 1024) * MiB;
  const sizes = plan(wantSqlite, wantPg);
  if (sizes.note) console.log(`  ${sizes.note}`);
  const sqlite = await benchSqlite(sizes.sqlite);
  const postgres = await benchPostgres(sizes.pg);
  return {
    figures: [sqlite.figure, postgres.figure],
    notes: [
      ...(sizes.note ? [sizes.note] : []),
      'Source data: the `outbox` table of a freshly migrated database, ~1 KB rows whose payload is JSON with 26 random 32-hex-digit words (SQLite: random bytes; Postgres: md5 words built by `insert … select generate_series`), so both compress alike and neither is a repeated string.',
      'MiB/s is of the source size: SQLite = the database file after a WAL checkpoint; Postgres = sum of pg_total_relation_size (heap, TOAST, indexes) of the schema, after VACUUM (FREEZE) and CHECKPOINT so no variant pays for hint bits. One timed run per variant; the reference runs first, both from a warm page cache (the data was just written).',
      ...sqlite.notes,
      ...postgres.notes,
      'Both sides compress at zlib level 6 (Node createGzip default; gzip -6; pg_dump -Fc default). writeBackupArchive also takes per-table content checksums (a SHA-256 per row), the file SHA-256, and fsyncs the archive; gzip does not fsync.',
    ],
  };
}
