import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import { createGunzip } from 'node:zlib';
import {
  ARCHIVE_FORMAT,
  BackupArchiveError,
  TableDigest,
  type ArchiveHeader,
  type ArchiveTable,
  type ArchiveTrailer,
} from './backup-archive';
import type { CellValue } from './db/backup-snapshot';

/** Reading and checking a `taskyard-backup/1` archive (the format is described in ./backup-archive.ts). */

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
    // Nothing decoded at all and the gzip header is wrong: not an archive, not a broken one.
    const notGzip = line === 0 && code === 'Z_DATA_ERROR' && /header/i.test((err as Error).message);
    throw new BackupArchiveError(
      'corrupt',
      notGzip
        ? `${path.basename(file)} is not a taskyard backup archive (not gzip data)`
        : `archive ${path.basename(file)} is ${what} after line ${line} (${(err as Error).message})`,
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
