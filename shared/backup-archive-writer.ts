import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import {
  ARCHIVE_FORMAT,
  BackupArchiveError,
  TableDigest,
  type ArchiveHeader,
  type ArchiveTrailer,
} from './backup-archive';
import { openSnapshot, SnapshotError } from './db/backup-snapshot';

/** Writing a `taskyard-backup/1` archive (the format is described in ./backup-archive.ts). */

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
