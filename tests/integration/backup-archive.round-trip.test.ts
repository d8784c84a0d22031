import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { BackupArchiveError } from '../../shared/backup-archive';
import { readArchiveHeader } from '../../shared/backup-archive-reader';
import { writeBackupArchive, type BackupArchiveResult } from '../../shared/backup-archive-writer';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import type { Migration } from '../../shared/db/migrate';
import { restoreArchive, verifyBackupArchive } from '../../shared/db/restore';
import {
  checksumsOf,
  openMigrated,
  emptyTables,
  readAllRows,
  seedSmallDatabase,
  seededCounts,
} from '../helpers/backup-fixtures';
import { disposeTestDatabase } from '../helpers/test-database';
import { BACKENDS } from '../helpers/services';

const SEEDED_COLUMNS = { api_keys: 1, idempotency_keys: 1, outbox: 1, settings: 1 };

describe.each(BACKENDS)('a backup archive of a $backend database', ({ backend, makeUrl }) => {
  const urls: string[] = [];
  const handles: DatabaseHandle[] = [];
  let dir: string;
  let sourceUrl: string;
  let source: DatabaseHandle;
  let archive: BackupArchiveResult;
  let migrations: Migration[];
  /** Rows per table after seedSmallDatabase; tables of later migrations hold 0. */
  let EXPECTED_COUNTS: Record<string, number>;
  let latest: string;

  /** A fresh, unmigrated database of `kind`, closed and disposed in afterAll. */
  async function fresh(kind: 'sqlite' | 'postgres'): Promise<{ url: string; handle: DatabaseHandle }> {
    const url = BACKENDS.find((b) => b.backend === kind)!.makeUrl('bk_target');
    urls.push(url);
    const handle = await createDatabase(url);
    handles.push(handle);
    return { url, handle };
  }

  /** A copy of the archive with its decompressed lines changed by `edit`. */
  function rewritten(name: string, edit: (lines: string[]) => void): string {
    const lines = gunzipSync(fs.readFileSync(archive.path)).toString('utf8').split('\n');
    edit(lines);
    const file = path.join(dir, name);
    fs.writeFileSync(file, gzipSync(lines.join('\n')));
    return file;
  }

  beforeAll(async () => {
    migrations = await loadMigrations();
    latest = migrations.at(-1)!.name;
    EXPECTED_COUNTS = await seededCounts(25);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-backups-'));
    sourceUrl = makeUrl('bk_source');
    urls.push(sourceUrl);
    source = await openMigrated(sourceUrl);
    handles.push(source);
    await seedSmallDatabase(source, 25);
    // 7 rows per chunk: the outbox is read in several keyset pages.
    archive = await writeBackupArchive(sourceUrl, {
      dir,
      fileName: 'b1.ndjson.gz',
      chunkRows: 7,
      now: () => 1_767_225_600_000,
    });
  });

  afterAll(async () => {
    for (const h of handles) await h.close();
    for (const url of urls) await disposeTestDatabase(url);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes one gzip NDJSON file with a header, a section per table and a trailer, and no temporary file', () => {
    expect(fs.readdirSync(dir)).toEqual(['b1.ndjson.gz']);
    const bytes = fs.readFileSync(archive.path);
    expect(archive.sizeBytes).toBe(bytes.length);
    expect(archive.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(archive.schemaVersion).toBe(latest);
    expect(archive.rowCounts).toEqual(EXPECTED_COUNTS);

    const lines = gunzipSync(bytes).toString('utf8').trimEnd().split('\n');
    const header = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(header).toMatchObject({
      format: 'taskyard-backup/1',
      schema_version: latest,
      backend,
      created_at: '2026-01-01T00:00:00.000Z',
    });
    const tables = header.tables as Array<{ name: string; columns: string[] }>;
    // Every application table, sorted by name, the ledger excluded.
    expect(tables.map((t) => t.name)).toEqual(Object.keys(EXPECTED_COUNTS).sort());
    expect(tables.filter((t) => t.name in SEEDED_COLUMNS)).toEqual([
      {
        name: 'api_keys',
        columns: ['id', 'name', 'key_hash', 'scopes', 'created_at', 'revoked_at', 'last_used_at'],
      },
      {
        name: 'idempotency_keys',
        columns: [
          'principal_id',
          'key',
          'fingerprint',
          'state',
          'claim_token',
          'lease_expires_at',
          'response_status',
          'response_body',
          'response_location',
          'created_at',
          'expires_at',
        ],
      },
      {
        name: 'outbox',
        columns: [
          'id',
          'queue',
          'job_name',
          'job_id',
          'payload',
          'created_at',
          'dispatched_at',
          'attempts',
          'last_error',
        ],
      },
      { name: 'settings', columns: ['key', 'value', 'updated_at'] },
    ]);
    const rows = Object.values(EXPECTED_COUNTS).reduce((a, b) => a + b, 0);
    expect(lines).toHaveLength(1 + tables.length + rows + 1);
    expect(JSON.parse(lines[1]!)).toEqual({ table: 'api_keys' });
    // Rows in primary-key order, numbers as numbers, NULL as null.
    expect(JSON.parse(lines[3]!)).toEqual([
      'k2',
      'ci',
      'b'.repeat(64),
      'read,write',
      0,
      4_102_444_800_000,
      1,
    ]);
    const trailer = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
    expect(trailer).toEqual({
      trailer: true,
      row_counts: EXPECTED_COUNTS,
      content_sha256: archive.contentSha256,
    });
    expect(Object.values(archive.contentSha256).every((h) => /^[0-9a-f]{64}$/.test(h))).toBe(true);
  });

  it('readArchiveHeader returns the header alone', async () => {
    const header = await readArchiveHeader(archive.path);
    expect(header).toMatchObject({ format: 'taskyard-backup/1', schema_version: latest, backend });
  });

  it.each(['sqlite', 'postgres'] as const)(
    'restores into a fresh %s database with identical rows and content checksums',
    async (kind) => {
      const target = await fresh(kind);
      const result = await restoreArchive(archive.path, target.handle, {
        migrations,
        expectedSha256: archive.sha256,
      });
      expect(result).toEqual({
        sha256: archive.sha256,
        schemaVersion: latest,
        sourceBackend: backend,
        rowCounts: EXPECTED_COUNTS,
        contentSha256: archive.contentSha256,
      });
      expect(await readAllRows(target.handle)).toEqual(await readAllRows(source));
      // Read back from the database itself, not from what the restore counted.
      expect(await checksumsOf(target.url)).toEqual({
        rowCounts: EXPECTED_COUNTS,
        contentSha256: archive.contentSha256,
      });
    },
  );

  it('verify restores into a scratch SQLite database and reports matching counts and checksums', async () => {
    // A private TMPDIR (os.tmpdir() reads it on each call) shows what verify leaves behind.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-tmpdir-'));
    const previous = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    expect(os.tmpdir()).toBe(tmp);
    let outcome;
    try {
      outcome = await verifyBackupArchive(archive.path, { migrations, expectedSha256: archive.sha256 });
      expect(fs.readdirSync(tmp)).toEqual([]);
    } finally {
      if (previous === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previous;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    expect(outcome).toEqual({
      ok: true,
      sha256: archive.sha256,
      schemaVersion: latest,
      rowCounts: EXPECTED_COUNTS,
      contentSha256: archive.contentSha256,
    });
  });

  it('refuses a target that already holds rows and leaves them untouched', async () => {
    const target = await fresh(backend);
    await restoreArchive(archive.path, target.handle, { migrations });
    await target.handle.db.deleteFrom('outbox').execute();
    const before = await readAllRows(target.handle);
    const err = await restoreArchive(archive.path, target.handle, { migrations }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupArchiveError);
    expect(err).toMatchObject({ problem: 'not-empty' });
    expect((err as Error).message).toMatch(
      /holds rows in api_keys, (\w+, )*idempotency_keys, (\w+, )*settings;/,
    );
    expect(await readAllRows(target.handle)).toEqual(before);
  });

  it('refuses an archive whose sha256 is not the expected one, before touching the target', async () => {
    const target = await fresh(backend);
    const err = await restoreArchive(archive.path, target.handle, {
      migrations,
      expectedSha256: '0'.repeat(64),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'BackupArchiveError', problem: 'checksum-mismatch' });
    expect((err as Error).message).toContain(archive.sha256);
    const outcome = await verifyBackupArchive(archive.path, { migrations, expectedSha256: 'f'.repeat(64) });
    expect(outcome).toMatchObject({ ok: false, problem: 'checksum-mismatch' });
  });

  it('refuses a truncated archive and restores nothing', async () => {
    const bytes = fs.readFileSync(archive.path);
    const file = path.join(dir, 'truncated.ndjson.gz');
    fs.writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length * 0.8)));
    const target = await fresh('sqlite');
    const err = await restoreArchive(file, target.handle, { migrations }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupArchiveError);
    expect(err).toMatchObject({ problem: 'corrupt' });
    expect((err as Error).message).toMatch(/truncated after line \d+/);
    expect(await readAllRows(target.handle)).toEqual(emptyTables(EXPECTED_COUNTS));
    expect(await verifyBackupArchive(file, { migrations })).toMatchObject({ ok: false, problem: 'corrupt' });
  });

  it('refuses an archive with a corrupted byte', async () => {
    const bytes = Buffer.from(fs.readFileSync(archive.path));
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0xff;
    const file = path.join(dir, 'corrupted.ndjson.gz');
    fs.writeFileSync(file, bytes);
    const target = await fresh('sqlite');
    const err = await restoreArchive(file, target.handle, { migrations }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupArchiveError);
    expect(err).toMatchObject({ problem: 'corrupt' });
    expect(await readAllRows(target.handle)).toEqual(emptyTables(EXPECTED_COUNTS));
  });

  it('refuses a file that is not gzip at all', async () => {
    const file = path.join(dir, 'plain.ndjson');
    fs.writeFileSync(file, '{"format":"taskyard-backup/1"}\n');
    const err = await readArchiveHeader(file).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'BackupArchiveError', problem: 'corrupt', line: 1 });
  });

  it('a line that is not JSON is refused with its line number', async () => {
    const file = rewritten('bad-json.ndjson.gz', (lines) => {
      lines[9] = '["o-0003", "backups"';
    });
    const target = await fresh('sqlite');
    const err = await restoreArchive(file, target.handle, { migrations }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'BackupArchiveError', problem: 'corrupt', line: 10 });
    expect((err as Error).message).toContain('archive line 10 is not valid JSON');
  });

  it('a row that disagrees with the trailer checksum is refused and rolled back', async () => {
    const file = rewritten('tampered.ndjson.gz', (lines) => {
      const row = JSON.parse(lines[3]!) as unknown[];
      row[1] = 'tampered';
      lines[3] = JSON.stringify(row);
    });
    const target = await fresh(backend);
    const err = await restoreArchive(file, target.handle, { migrations }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'BackupArchiveError', problem: 'checksum-mismatch' });
    expect((err as Error).message).toContain('api_keys: content checksum');
    expect(await readAllRows(target.handle)).toEqual(emptyTables(EXPECTED_COUNTS));
  });

  it('an archive whose trailer is missing is refused as truncated', async () => {
    const file = rewritten('no-trailer.ndjson.gz', (lines) => {
      lines.splice(-2, 1);
    });
    const err = await verifyBackupArchive(file, { migrations });
    expect(err).toMatchObject({ ok: false, problem: 'corrupt' });
    expect(err.ok ? '' : err.detail).toContain('ends without a trailer');
  });

  it('an archive of a schema version this code does not know is refused', async () => {
    const file = rewritten('future.ndjson.gz', (lines) => {
      lines[0] = lines[0]!.replace(`"${latest}"`, '"9999_from_the_future"');
    });
    const target = await fresh(backend);
    const err = await restoreArchive(file, target.handle, { migrations }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'BackupArchiveError', problem: 'unknown-schema' });
    expect((err as Error).message).toContain('9999_from_the_future');
  });

  it('aborting mid-write rejects, removes the temporary file and leaves no archive', async () => {
    const controller = new AbortController();
    let progress = 0;
    const err = await writeBackupArchive(sourceUrl, {
      dir,
      fileName: 'aborted.ndjson.gz',
      chunkRows: 5,
      signal: controller.signal,
      onProgress: (p) => {
        progress++;
        if (p.table === 'outbox' && p.rows === 10) controller.abort();
      },
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'AbortError' });
    expect(progress).toBe(4);
    expect(fs.readdirSync(dir).filter((f) => f.includes('aborted'))).toEqual([]);
  });
});
