import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CompiledQuery, type Kysely } from 'kysely';
import {
  BackupArchiveError,
  TableDigest,
  type ArchiveTable,
  type BackupArchiveProblem,
} from '../backup-archive';
import { readArchive, readArchiveHeader, sha256File } from '../backup-archive-reader';
import type { Logger } from '../logger';
import {
  introspectKysely,
  openSnapshot,
  SnapshotError,
  type CellValue,
  type TableShape,
} from './backup-snapshot';
import { createDatabase, type DatabaseHandle, type Dialect } from './database';
import { migrateToLatest, migrationStatus, type Migration } from './migrate';

/**
 * Restoring a `taskyard-backup/1` archive into an empty database of either backend, and the
 * restore drill (verify) that proves an archive can be restored.
 */

export interface RestoreOptions {
  /** The code's migrations (migrations/index.ts loadMigrations()). */
  migrations: readonly Migration[];
  /** SHA-256 hex the archive file must have (e.g. the one recorded when it was written). */
  expectedSha256?: string;
  signal?: AbortSignal;
  /**
   * Apply the migrations newer than the archive's schema version after restoring its rows, so
   * they transform the data as they would have on the original database. @defaultValue true
   */
  upgrade?: boolean;
  /** Rows per INSERT statement. @defaultValue 1000 */
  batchRows?: number;
  logger?: Logger;
  /** Called once the rows are committed, before the newer migrations run. */
  onRowsCommitted?: () => void;
}

export interface RestoreResult {
  /** SHA-256 hex of the archive file. */
  sha256: string;
  schemaVersion: string;
  /** Backend the archive was taken from. */
  sourceBackend: Dialect;
  rowCounts: Record<string, number>;
  contentSha256: Record<string, string>;
}

/**
 * Restore an archive into `target`, all rows in one transaction. In order:
 * 1. the file's SHA-256 is checked against `expectedSha256` (before the target is touched);
 * 2. the archive's schema version must be one of `migrations`;
 * 3. the target must hold no application rows (any table but schema_migrations);
 * 4. the target is migrated to the archive's schema version (or to the latest, when it is already
 *    past it); rows the migrations themselves seeded are replaced by the archive's;
 * 5. the rows are inserted; the transaction commits only when every table's row count and content
 *    checksum equal the trailer's and the target's count(*) equals the rows read;
 * 6. with `upgrade` (default), the remaining migrations are applied.
 * @throws BackupArchiveError: `checksum-mismatch`, `unknown-schema`, `not-empty`, `incompatible`
 *   (a table or column of the archive is missing in the target), `corrupt` (with the line number).
 * @throws MigrationIntegrityError when the target's migration ledger does not match the code.
 */
export async function restoreArchive(
  file: string,
  target: DatabaseHandle,
  opts: RestoreOptions,
): Promise<RestoreResult> {
  const sha256 = await sha256File(file, opts.signal);
  if (opts.expectedSha256 !== undefined && opts.expectedSha256.toLowerCase() !== sha256) {
    throw new BackupArchiveError(
      'checksum-mismatch',
      `archive ${path.basename(file)} has sha256 ${sha256}, expected ${opts.expectedSha256}`,
    );
  }
  const header = await readArchiveHeader(file);
  const versionIndex = opts.migrations.findIndex((m) => m.name === header.schema_version);
  if (versionIndex < 0) {
    throw new BackupArchiveError(
      'unknown-schema',
      `archive schema version ${header.schema_version} is not a migration this code knows (latest is ${
        opts.migrations.at(-1)?.name ?? 'none'
      }): restore it with the taskyard version that wrote it`,
    );
  }

  const db = target.db as unknown as Kysely<unknown>;
  await assertEmpty(db, target);

  // Rows are restored into the schema they were taken from when possible, so later migrations
  // run over them exactly as they would have on the original database.
  const status = await migrationStatus(target, opts.migrations);
  const pastArchive = status.applied.some(
    (name) => opts.migrations.findIndex((m) => m.name === name) > versionIndex,
  );
  await migrateToLatest(
    target,
    pastArchive ? opts.migrations : opts.migrations.slice(0, versionIndex + 1),
    opts.logger,
  );

  const shapes = new Map((await introspect(db, target)).map((t) => [t.name, t]));
  for (const t of header.tables) {
    const shape = shapes.get(t.name);
    const missing = shape === undefined ? [] : t.columns.filter((c) => !shape.columns.includes(c));
    if (shape === undefined || missing.length > 0) {
      throw new BackupArchiveError(
        'incompatible',
        shape === undefined
          ? `the target has no table ${t.name}, which the archive holds`
          : `the target table ${t.name} lacks column(s) ${missing.join(', ')}, which the archive holds`,
      );
    }
  }

  const totals = await db.transaction().execute(async (trx) => {
    for (const t of header.tables) await trx.executeQuery(CompiledQuery.raw(`delete from ${quote(t.name)}`));
    for await (const event of readArchive(file, { batchRows: opts.batchRows ?? 1000, signal: opts.signal })) {
      opts.signal?.throwIfAborted();
      if (event.kind === 'rows') {
        try {
          await trx.executeQuery(insertBatch(target.dialect, event.table, event.rows));
        } catch (err) {
          throw rowsRefused(err, event.table.name, target.dialect);
        }
      } else if (event.kind === 'end') {
        const problems: string[] = [];
        for (const t of header.tables) {
          const r = await trx.executeQuery<{ n: number | string }>(
            CompiledQuery.raw(`select count(*) as n from ${quote(t.name)}`),
          );
          const n = Number(r.rows[0]?.n);
          if (n !== event.rowCounts[t.name])
            problems.push(`${t.name}: ${n} rows stored, ${event.rowCounts[t.name]} read`);
        }
        if (problems.length > 0) {
          throw new BackupArchiveError(
            'checksum-mismatch',
            `restored rows differ from the archive: ${problems.join('; ')}`,
          );
        }
        return { rowCounts: event.rowCounts, contentSha256: event.contentSha256 };
      }
    }
    // readArchive always ends with `end` or throws.
    throw new BackupArchiveError('corrupt', `archive ${path.basename(file)} ended unexpectedly`);
  });

  opts.onRowsCommitted?.();
  if (!pastArchive && opts.upgrade !== false) await migrateToLatest(target, opts.migrations, opts.logger);
  return { sha256, schemaVersion: header.schema_version, sourceBackend: header.backend, ...totals };
}

/**
 * The target refused a batch: say which table, and what to do when the cause is text an
 * archive of another backend may hold (SQLite stores U+0000, Postgres refuses it in text).
 */
function rowsRefused(err: unknown, table: string, dialect: Dialect): BackupArchiveError {
  const message = err instanceof Error ? err.message : String(err);
  const nul = dialect === 'postgres' && /unsupported Unicode escape sequence|0x00/.test(message);
  return new BackupArchiveError(
    'incompatible',
    nul
      ? `the target refused rows of table ${table}: a text value holds U+0000, which Postgres cannot store (${message}); remove the character in the source database (e.g. replace(col, char(0), '')), take a new backup and restore that`
      : `the target refused rows of table ${table}: ${message}`,
    undefined,
    { cause: err },
  );
}

function quote(id: string): string {
  return `"${id.replace(/"/g, '""')}"`;
}

/**
 * One INSERT per batch with the rows as a single JSON parameter: no bind-parameter limits, and
 * each backend converts JSON values to the column types itself.
 */
function insertBatch(dialect: Dialect, table: ArchiveTable, rows: CellValue[][]): CompiledQuery {
  const columns = table.columns.map(quote).join(', ');
  if (dialect === 'sqlite') {
    const values = table.columns.map((_, i) => `json_extract(value, '$[${i}]')`).join(', ');
    return CompiledQuery.raw(
      `insert into ${quote(table.name)} (${columns}) select ${values} from json_each(?)`,
      [JSON.stringify(rows)],
    );
  }
  const objects = rows.map((row) => Object.fromEntries(table.columns.map((c, i) => [c, row[i]])));
  return CompiledQuery.raw(
    `insert into ${quote(table.name)} (${columns}) select ${columns} from json_populate_recordset(null::${quote(table.name)}, $1::json)`,
    [JSON.stringify(objects)],
  );
}

async function introspect(db: Kysely<unknown>, target: DatabaseHandle): Promise<TableShape[]> {
  try {
    return await introspectKysely(db, target.dialect);
  } catch (err) {
    if (err instanceof SnapshotError)
      throw new BackupArchiveError('incompatible', err.message, undefined, { cause: err });
    throw err;
  }
}

async function assertEmpty(db: Kysely<unknown>, target: DatabaseHandle): Promise<void> {
  const filled: string[] = [];
  for (const t of await introspect(db, target)) {
    const r = await db.executeQuery(CompiledQuery.raw(`select 1 from ${quote(t.name)} limit 1`));
    if (r.rows.length > 0) filled.push(t.name);
  }
  if (filled.length > 0) {
    throw new BackupArchiveError(
      'not-empty',
      `refusing to restore into ${target.displayUrl}: it already holds rows in ${filled.join(', ')}; restore into an empty database`,
    );
  }
}

export type VerifyOutcome =
  | {
      ok: true;
      sha256: string;
      schemaVersion: string;
      rowCounts: Record<string, number>;
      contentSha256: Record<string, string>;
    }
  | { ok: false; problem: BackupArchiveProblem; detail: string; line?: number };

/**
 * Restore drill: restore the archive into a scratch SQLite database in a private temporary
 * directory, read every table back and compare row counts and content checksums with the
 * archive's trailer. The scratch directory is always removed.
 * @returns `ok: false` with the BackupArchiveError's problem and message when the archive is
 *   refused; other failures (temporary directory, disk full) are thrown.
 */
export async function verifyBackupArchive(
  file: string,
  opts: { migrations: readonly Migration[]; expectedSha256?: string; signal?: AbortSignal },
): Promise<VerifyOutcome> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'taskyard-verify-'));
  const url = `sqlite:${path.join(dir, 'verify.db')}`;
  try {
    const scratch = await createDatabase(url);
    let restored: RestoreResult;
    try {
      // No upgrade: later migrations may rewrite rows, and the read-back must match the archive.
      restored = await restoreArchive(file, scratch, { ...opts, upgrade: false });
    } finally {
      await scratch.close();
    }
    const header = await readArchiveHeader(file);
    const snapshot = await openSnapshot(url);
    const problems: string[] = [];
    try {
      const shapes = new Map(snapshot.tables.map((t) => [t.name, t]));
      for (const t of header.tables) {
        const digest = new TableDigest();
        for await (const rows of snapshot.chunks(shapes.get(t.name)!, t.columns)) {
          opts.signal?.throwIfAborted();
          for (const row of rows) digest.add(row);
        }
        if (digest.count !== restored.rowCounts[t.name] || digest.hex() !== restored.contentSha256[t.name]) {
          problems.push(
            `${t.name}: ${digest.count} rows read back, ${restored.rowCounts[t.name]} in the archive`,
          );
        }
      }
    } finally {
      await snapshot.close();
    }
    if (problems.length > 0) {
      return {
        ok: false,
        problem: 'checksum-mismatch',
        detail: `restored database differs: ${problems.join('; ')}`,
      };
    }
    return {
      ok: true,
      sha256: restored.sha256,
      schemaVersion: restored.schemaVersion,
      rowCounts: restored.rowCounts,
      contentSha256: restored.contentSha256,
    };
  } catch (err) {
    if (err instanceof BackupArchiveError) {
      return {
        ok: false,
        problem: err.problem,
        detail: err.message,
        ...(err.line === undefined ? {} : { line: err.line }),
      };
    }
    throw err;
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
