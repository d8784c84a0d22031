import { createHash, hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import { createGunzip, createGzip } from 'node:zlib';
import { openSnapshot, SnapshotError, type CellValue } from './db/backup-snapshot';
import type { Dialect } from './db/database';

/**
 * Backup archives, format `taskyard-backup/1`: a gzip of NDJSON lines.
 *
 *     {"format":"taskyard-backup/1","schema_version":"0001_initial","backend":"sqlite",
 *      "created_at":"2026-01-01T00:00:00.000Z","tables":[{"name":"api_keys","columns":["id",…]},…]}
 *     {"table":"api_keys"}
 *     ["k1","ops","ab12…","admin",1767225600000,null,null]        one array per row, header column order
 *     {"table":"idempotency_keys"}
 *     …
 *     {"trailer":true,"row_counts":{"api_keys":1,…},"content_sha256":{"api_keys":"9f…",…}}
 *
 * Every table of the header has a section, in header order, and every section is in the trailer.
 * The content checksum of a table (see TableDigest) does not depend on row order or backend, so
 * a SQLite backup restored into Postgres and read back gives the same value.
 */

export const ARCHIVE_FORMAT = 'taskyard-backup/1';

/** Why an archive was refused. */
export type BackupArchiveProblem =
  | 'corrupt' // not gzip, damaged, truncated, bad JSON, or not laid out as the format says
  | 'checksum-mismatch' // file sha256, row count or content checksum differs from what was expected
  | 'not-empty' // the restore target already holds application rows
  | 'unknown-schema' // the archive's schema version is not a migration this code knows
  | 'incompatible' // the target schema lacks a table or column the archive has
  | 'source'; // the database to back up cannot be snapshotted (not migrated, table without a key)

/** An archive that cannot be written, read, or restored; `line` is the 1-based NDJSON line when known. */
export class BackupArchiveError extends Error {
  constructor(
    readonly problem: BackupArchiveProblem,
    message: string,
    readonly line?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BackupArchiveError';
  }
}

export interface ArchiveTable {
  name: string;
  columns: string[];
}

export interface ArchiveHeader {
  format: typeof ARCHIVE_FORMAT;
  /** Name of the latest migration applied to the backed-up database. */
  schema_version: string;
  backend: Dialect;
  /** RFC 3339 UTC. */
  created_at: string;
  tables: ArchiveTable[];
}

export interface ArchiveTrailer {
  trailer: true;
  row_counts: Record<string, number>;
  content_sha256: Record<string, string>;
}

/**
 * Order-independent checksum of a table's rows: the sum modulo 2^256 of the SHA-256 of each row's
 * canonical serialisation (`JSON.stringify` of its values in header column order: strings,
 * numbers, null), then SHA-256 over the row count and that sum. Order-independent because
 * primary-key order is collation-dependent on Postgres while SQLite sorts bytes.
 */
export class TableDigest {
  private readonly sum = new Uint8Array(32);
  count = 0;

  add(values: readonly CellValue[]): void {
    this.addSerialised(JSON.stringify(values));
  }

  /** `json` must be `JSON.stringify(values)`: the writer has that string anyway for the archive line. */
  addSerialised(json: string): void {
    // One-shot hash(): no Hash object per row (a backup hashes every row of the database).
    const h = hash('sha256', json, 'buffer');
    let carry = 0;
    for (let i = 31; i >= 0; i--) {
      const v = this.sum[i]! + h[i]! + carry;
      this.sum[i] = v & 0xff;
      carry = v >> 8;
    }
    this.count++;
  }

  hex(): string {
    return createHash('sha256')
      .update(`taskyard-rows/1 ${this.count} ${Buffer.from(this.sum).toString('hex')}`)
      .digest('hex');
  }
}

export interface WriteBackupOptions {
  /** Directory of the archive; created when absent. */
  dir: string;
  /** File name inside `dir` (no path separators, not starting with a dot), e.g. `backup-<id>.ndjson.gz`. */
  fileName: string;
  /** Aborting stops the backup between chunks; the partial file is removed. */
  signal?: AbortSignal;
  /** Called after each chunk with the rows written so far for that table; a returned promise is awaited (backpressure for progress reporting). */
  onProgress?: (p: { table: string; rows: number }) => void | Promise<void>;
  /** Rows per keyset page. @defaultValue 2000 */
  chunkRows?: number;
  /** Epoch milliseconds for the header's created_at. @defaultValue Date.now */
  now?: () => number;
}

export interface BackupArchiveResult {
  /** Final path of the archive. */
  path: string;
  sizeBytes: number;
  /** SHA-256 hex of the archive file. */
  sha256: string;
  schemaVersion: string;
  rowCounts: Record<string, number>;
  contentSha256: Record<string, string>;
}

const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$/;

/**
 * Write a consistent snapshot of every application table of `databaseUrl` to `<dir>/<fileName>`,
 * streamed (memory does not grow with the database). The archive is written as
 * `<dir>/.<fileName>.tmp`, fsynced, renamed over `<dir>/<fileName>` (replacing a file of that
 * name), and the directory is fsynced; on any failure the temporary file is removed.
 * @throws BackupArchiveError (`source`) when the database cannot be snapshotted, or a cell holds
 *   a value the format cannot carry (binary, a timestamp type).
 * @throws the signal's AbortError when aborted; driver and file-system errors as they are.
 */
export async function writeBackupArchive(
  databaseUrl: string,
  opts: WriteBackupOptions,
): Promise<BackupArchiveResult> {
  if (!FILE_NAME.test(opts.fileName)) {
    throw new Error(
      `invalid backup file name "${opts.fileName}": use letters, digits, . _ - (not starting with .)`,
    );
  }
  opts.signal?.throwIfAborted();
  await fsp.mkdir(opts.dir, { recursive: true });
  const finalPath = path.join(opts.dir, opts.fileName);
  const tmpPath = path.join(opts.dir, `.${opts.fileName}.tmp`);

  let snapshot;
  try {
    snapshot = await openSnapshot(databaseUrl);
  } catch (err) {
    if (err instanceof SnapshotError)
      throw new BackupArchiveError('source', err.message, undefined, { cause: err });
    throw err;
  }
  const snap = snapshot;
  const digests = new Map(snap.tables.map((t) => [t.name, new TableDigest()]));
  const fileHash = createHash('sha256');
  let sizeBytes = 0;
  try {
    const header: ArchiveHeader = {
      format: ARCHIVE_FORMAT,
      schema_version: snap.schemaVersion,
      backend: snap.backend,
      created_at: new Date((opts.now ?? Date.now)()).toISOString(),
      tables: snap.tables.map((t) => ({ name: t.name, columns: t.columns })),
    };

    async function* lines(): AsyncGenerator<string> {
      yield `${JSON.stringify(header)}\n`;
      for (const table of snap.tables) {
        const digest = digests.get(table.name)!;
        yield `${JSON.stringify({ table: table.name })}\n`;
        for await (const rows of snap.chunks(table, table.columns, opts.chunkRows)) {
          opts.signal?.throwIfAborted();
          let text = '';
          for (const row of rows) {
            checkCells(table.name, table.columns, row);
            const json = JSON.stringify(row);
            digest.addSerialised(json);
            text += `${json}\n`;
          }
          yield text;
          await opts.onProgress?.({ table: table.name, rows: digest.count });
        }
      }
      const trailer: ArchiveTrailer = {
        trailer: true,
        row_counts: Object.fromEntries([...digests].map(([name, d]) => [name, d.count])),
        content_sha256: Object.fromEntries([...digests].map(([name, d]) => [name, d.hex()])),
      };
      yield `${JSON.stringify(trailer)}\n`;
    }

    // The file's checksum is taken from the gzip output on its way to disk: no second read.
    const measure = new Transform({
      transform(chunk: Buffer, _enc, done) {
        fileHash.update(chunk);
        sizeBytes += chunk.length;
        done(null, chunk);
      },
    });
    await pipeline(
      Readable.from(lines()),
      createGzip(),
      measure,
      fs.createWriteStream(tmpPath, { flags: 'w', mode: 0o600 }),
      opts.signal === undefined ? {} : { signal: opts.signal },
    );
    // fsync through a second descriptor: the data of the inode, whichever descriptor wrote it.
    const file = await fsp.open(tmpPath, 'r+');
    try {
      await file.sync();
    } finally {
      await file.close();
    }
    await fsp.rename(tmpPath, finalPath);
    await syncDirectory(opts.dir);
  } catch (err) {
    await fsp.rm(tmpPath, { force: true });
    throw err;
  } finally {
    await snap.close();
  }
  return {
    path: finalPath,
    sizeBytes,
    sha256: fileHash.digest('hex'),
    schemaVersion: snap.schemaVersion,
    rowCounts: Object.fromEntries([...digests].map(([name, d]) => [name, d.count])),
    contentSha256: Object.fromEntries([...digests].map(([name, d]) => [name, d.hex()])),
  };
}

function checkCells(table: string, columns: readonly string[], row: readonly unknown[]): void {
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (v === null || typeof v === 'string' || typeof v === 'boolean') continue;
    if (typeof v === 'number' && Number.isFinite(v)) continue;
    throw new BackupArchiveError(
      'source',
      `${table}.${columns[i]} holds a value the archive format cannot carry (${v instanceof Buffer ? 'binary' : typeof v})`,
    );
  }
}

/** Make a rename durable: fsync the directory entry (not supported everywhere, e.g. Windows). */
async function syncDirectory(dir: string): Promise<void> {
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(dir, 'r');
    await handle.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM') throw err;
  } finally {
    await handle?.close();
  }
}

/** SHA-256 hex of a file, streamed. */
export async function sha256File(file: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(fs.createReadStream(file), hash, signal === undefined ? {} : { signal });
  return hash.digest('hex');
}

/** Longest NDJSON line accepted; a longer one means a damaged archive, not a huge row. */
const MAX_LINE_CHARS = 64 * 1024 * 1024;

/**
 * The archive's lines, decompressed on the fly, a chunk's worth at a time: `[number of the first
 * line (1-based), lines]`.
 * @throws BackupArchiveError (`corrupt`) for a damaged or truncated gzip stream, naming the line reached.
 */
async function* archiveLines(file: string, signal?: AbortSignal): AsyncGenerator<[number, string[]]> {
  const source = fs.createReadStream(file, signal === undefined ? {} : { signal });
  const gunzip = createGunzip();
  source.on('error', (err) => gunzip.destroy(err));
  source.pipe(gunzip);
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let line = 0;
  try {
    for await (const chunk of gunzip) {
      const text = pending + decoder.write(chunk as Buffer);
      const lines: string[] = [];
      let start = 0;
      let nl: number;
      while ((nl = text.indexOf('\n', start)) >= 0) {
        lines.push(text.slice(start, nl));
        start = nl + 1;
      }
      pending = text.slice(start);
      if (lines.length > 0) {
        yield [line + 1, lines];
        line += lines.length;
      }
      if (pending.length > MAX_LINE_CHARS) {
        throw new BackupArchiveError(
          'corrupt',
          `archive line ${line + 1} is longer than ${MAX_LINE_CHARS} characters`,
          line + 1,
        );
      }
    }
    pending += decoder.end();
    if (pending !== '') yield [line + 1, [pending]];
  } catch (err) {
    if (err instanceof BackupArchiveError) throw err;
    if ((err as Error).name === 'AbortError') throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') throw err;
    const what = code === 'Z_BUF_ERROR' ? 'truncated' : 'damaged';
    throw new BackupArchiveError(
      'corrupt',
      `archive ${path.basename(file)} is ${what} after line ${line} (${(err as Error).message})`,
      line + 1,
      { cause: err },
    );
  } finally {
    source.destroy();
    gunzip.destroy();
  }
}

function parseLine(text: string, line: number): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BackupArchiveError(
      'corrupt',
      `archive line ${line} is not valid JSON: ${(err as Error).message}`,
      line,
      {
        cause: err,
      },
    );
  }
}

function corrupt(line: number, message: string): BackupArchiveError {
  return new BackupArchiveError('corrupt', `archive line ${line}: ${message}`, line);
}

function checkHeader(value: unknown, line: number): ArchiveHeader {
  const h = value as Partial<ArchiveHeader> | null;
  if (h === null || typeof h !== 'object' || h.format !== ARCHIVE_FORMAT) {
    throw corrupt(line, `not a ${ARCHIVE_FORMAT} archive header`);
  }
  const ok =
    typeof h.schema_version === 'string' &&
    (h.backend === 'sqlite' || h.backend === 'postgres') &&
    typeof h.created_at === 'string' &&
    Array.isArray(h.tables) &&
    h.tables.every(
      (t) =>
        t !== null &&
        typeof t === 'object' &&
        typeof t.name === 'string' &&
        Array.isArray(t.columns) &&
        t.columns.length > 0 &&
        t.columns.every((c) => typeof c === 'string'),
    ) &&
    new Set(h.tables.map((t) => t.name)).size === h.tables.length;
  if (!ok) throw corrupt(line, 'the header lacks schema_version, backend, created_at or a valid tables list');
  return h as ArchiveHeader;
}

/**
 * Read only the header line of an archive.
 * @throws BackupArchiveError (`corrupt`) when the file is not a readable taskyard-backup/1 archive.
 */
export async function readArchiveHeader(file: string): Promise<ArchiveHeader> {
  for await (const [line, lines] of archiveLines(file)) return checkHeader(parseLine(lines[0]!, line), line);
  throw new BackupArchiveError('corrupt', `archive ${path.basename(file)} is empty`, 1);
}

/** What readArchive yields: the header, then row batches table by table, then the verified totals. */
export type ArchiveEvent =
  | { kind: 'header'; header: ArchiveHeader }
  | { kind: 'rows'; table: ArchiveTable; rows: CellValue[][] }
  | { kind: 'end'; rowCounts: Record<string, number>; contentSha256: Record<string, string> };

/**
 * Stream an archive's content, checking its layout as it goes and, at the end, that the rows
 * read match the trailer's row counts and content checksums. A consumer that writes the rows
 * somewhere must treat them as provisional until `end` arrives.
 * @throws BackupArchiveError: `corrupt` (damaged gzip, truncated file, bad JSON, wrong layout —
 *   the message names the line), `checksum-mismatch` (trailer differs from the rows read).
 */
export async function* readArchive(
  file: string,
  opts: { batchRows?: number; signal?: AbortSignal } = {},
): AsyncGenerator<ArchiveEvent> {
  const batchRows = opts.batchRows ?? 1000;
  let header: ArchiveHeader | undefined;
  let tableIndex = -1;
  let table: ArchiveTable | undefined;
  let digest: TableDigest | undefined;
  let batch: CellValue[][] = [];
  let trailer: ArchiveTrailer | undefined;
  const digests = new Map<string, TableDigest>();

  for await (const [first, lines] of archiveLines(file, opts.signal)) {
    for (const [i, text] of lines.entries()) {
      const line = first + i;
      const value = parseLine(text, line);
      if (header === undefined) {
        header = checkHeader(value, line);
        yield { kind: 'header', header };
        continue;
      }
      if (trailer !== undefined) throw corrupt(line, 'content after the trailer');
      if (Array.isArray(value)) {
        if (table === undefined || digest === undefined)
          throw corrupt(line, 'a row before any table section');
        if (value.length !== table.columns.length) {
          throw corrupt(
            line,
            `a ${table.name} row has ${value.length} values, the header lists ${table.columns.length} columns`,
          );
        }
        for (const v of value) {
          if (!(v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')) {
            throw corrupt(line, `a ${table.name} row holds a nested value`);
          }
        }
        digest.add(value as CellValue[]);
        batch.push(value as CellValue[]);
        if (batch.length >= batchRows) {
          yield { kind: 'rows', table, rows: batch };
          batch = [];
        }
        continue;
      }
      if (value === null || typeof value !== 'object')
        throw corrupt(line, 'neither a row, a table section nor the trailer');
      if (table !== undefined && batch.length > 0) {
        yield { kind: 'rows', table, rows: batch };
        batch = [];
      }
      if ('table' in value) {
        const expected = header.tables[++tableIndex];
        if (expected === undefined || expected.name !== value.table) {
          throw corrupt(
            line,
            `unexpected section ${JSON.stringify(value.table)} (expected ${expected?.name ?? 'the trailer'})`,
          );
        }
        table = expected;
        digest = new TableDigest();
        digests.set(table.name, digest);
      } else if ((value as { trailer?: unknown }).trailer === true) {
        if (tableIndex !== header.tables.length - 1) {
          throw corrupt(line, `trailer after ${tableIndex + 1} of ${header.tables.length} table sections`);
        }
        trailer = value as ArchiveTrailer;
        if (typeof trailer.row_counts !== 'object' || typeof trailer.content_sha256 !== 'object') {
          throw corrupt(line, 'the trailer lacks row_counts or content_sha256');
        }
      } else {
        throw corrupt(line, 'neither a row, a table section nor the trailer');
      }
    }
  }
  if (header === undefined)
    throw new BackupArchiveError('corrupt', `archive ${path.basename(file)} is empty`, 1);
  if (trailer === undefined) {
    throw new BackupArchiveError(
      'corrupt',
      `archive ${path.basename(file)} is truncated: it ends without a trailer`,
    );
  }

  const rowCounts: Record<string, number> = {};
  const contentSha256: Record<string, string> = {};
  const problems: string[] = [];
  for (const t of header.tables) {
    const d = digests.get(t.name)!;
    rowCounts[t.name] = d.count;
    contentSha256[t.name] = d.hex();
    if (trailer.row_counts[t.name] !== d.count) {
      problems.push(`${t.name}: ${d.count} rows read, trailer says ${String(trailer.row_counts[t.name])}`);
    } else if (trailer.content_sha256[t.name] !== contentSha256[t.name]) {
      problems.push(
        `${t.name}: content checksum ${contentSha256[t.name]} read, trailer says ${String(trailer.content_sha256[t.name])}`,
      );
    }
  }
  if (problems.length > 0) {
    throw new BackupArchiveError(
      'checksum-mismatch',
      `archive content does not match its trailer: ${problems.join('; ')}`,
    );
  }
  yield { kind: 'end', rowCounts, contentSha256 };
}
