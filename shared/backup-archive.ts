import { createHash, hash } from 'node:crypto';
import type { CellValue } from './db/backup-snapshot';
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
