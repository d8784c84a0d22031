import { constants as fsConstants, existsSync, realpathSync, statSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadMigrations } from '../migrations/index';
import { BackupArchiveError } from '../shared/backup-archive';
import { EXIT_CONFIG, loadConfig } from '../shared/config';
import {
  generateApiKey,
  hashApiKey,
  insertApiKey,
  listApiKeys,
  revokeApiKey,
  type ApiKeyRecord,
} from '../shared/db/api-keys';
import { createDatabase, sqlitePath, type DatabaseHandle } from '../shared/db/database';
import { migrateToLatest, migrationStatus } from '../shared/db/migrate';
import { restoreArchive } from '../shared/db/restore';
import { settleRestoredBackups } from '../shared/db/backups-store';
import { ConfigError, MigrationIntegrityError, toError } from '../shared/errors';
import { SIMULATION_ID_PATTERN } from '../shared/contract/simulations-api';
import { SCOPES, type Scope } from '../shared/types';
import { DEFAULT_API_URL, simulate } from './simulate';

/**
 * The `taskyard` operator command: migrations, API keys, restores, and starting a
 * simulation through the api. migrate and keys read DATABASE_URL
 * through loadConfig. Exit codes: 0 done, 1 failed, 64 usage error, 78 configuration error.
 */

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 64;

const HELP = `Usage: taskyard <command> [options]

Commands:
  migrate                                   apply pending database migrations
  keys create --name <name> --scopes <list> create an API key; prints the key once
  keys list                                 list API keys (never the keys themselves)
  keys revoke <id>                          revoke an API key
  restore <archive> --database-url <url> [--sha256 <hex>] [--adopt-archives]
                                            restore a backup archive into an EMPTY database
                                            (migrated first; either backend). Restored
                                            backups' archive files stay the source
                                            install's (never deleted by this one's
                                            retention) unless --adopt-archives: use it
                                            when the source install is gone for good
  simulate <scenario.json> [--id <simulation_id>] [--url <api>] [--no-follow]
                                            start a simulation through the api and follow
                                            it to its end; prints the final run as JSON
                                            (key: TASKYARD_API_KEY with the write scope;
                                            api: --url, else TASKYARD_URL, else
                                            http://127.0.0.1:3000)

Options:
  --json      (keys create, keys list) print JSON instead of text
  -h, --help  show this help

Scopes: ${SCOPES.join(', ')} (admin implies write, which implies read).
The database is DATABASE_URL (default sqlite:./data/taskyard.db); simulate talks to the
api instead and needs no database.`;

export interface CliIo {
  env: NodeJS.ProcessEnv;
  out: (text: string) => void;
  err: (text: string) => void;
  /** Epoch milliseconds for created_at / revoked_at. */
  now: () => number;
}

class UsageError extends Error {
  override name = 'UsageError';
}

/** Run one command line (without `node` and the script). Never exits the process: returns the exit code. */
export async function runCli(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const cli: CliIo = {
    env: io.env ?? process.env,
    out: io.out ?? ((t) => console.log(t)),
    err: io.err ?? ((t) => console.error(t)),
    now: io.now ?? Date.now,
  };
  try {
    return await dispatch(argv, cli);
  } catch (err) {
    if (err instanceof UsageError) {
      cli.err(`taskyard: ${err.message}\nRun 'taskyard --help' for usage.`);
      return EXIT_USAGE;
    }
    if (err instanceof ConfigError) {
      cli.err(`taskyard: ${err.message}`);
      return EXIT_CONFIG;
    }
    cli.err(`taskyard: ${err instanceof Error ? err.message : String(err)}`);
    return EXIT_FAILED;
  }
}

async function dispatch(argv: readonly string[], cli: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    cli.out(HELP);
    return command === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (command === 'migrate') {
    const { values } = parse(rest, {});
    if (values.help) return help(cli);
    return withDatabase(cli, (handle) => migrate(handle, cli));
  }
  if (command === 'keys') {
    const [sub, ...args] = rest;
    if (sub === undefined || sub === '--help' || sub === '-h') return help(cli);
    if (sub === 'create') {
      const { values } = parse(args, {
        name: { type: 'string' },
        scopes: { type: 'string' },
        json: { type: 'boolean' },
      });
      if (values.help) return help(cli);
      const name = checkName(values.name);
      const scopes = checkScopes(values.scopes);
      return withMigratedDatabase(cli, (handle) =>
        createKey(handle, cli, name, scopes, values.json === true),
      );
    }
    if (sub === 'list') {
      const { values } = parse(args, { json: { type: 'boolean' } });
      if (values.help) return help(cli);
      return withMigratedDatabase(cli, (handle) => listKeys(handle, cli, values.json === true));
    }
    if (sub === 'revoke') {
      const { values, positionals } = parse(args, {}, true);
      if (values.help) return help(cli);
      if (positionals.length !== 1)
        throw new UsageError('keys revoke takes exactly one key id (see taskyard keys list)');
      const id = positionals[0] as string;
      return withMigratedDatabase(cli, (handle) => revokeKey(handle, cli, id));
    }
    throw new UsageError(`unknown keys command "${sub}": use create, list or revoke`);
  }
  if (command === 'restore') {
    const { values, positionals } = parse(
      rest,
      {
        'database-url': { type: 'string' },
        sha256: { type: 'string' },
        'adopt-archives': { type: 'boolean' },
      },
      true,
    );
    if (values.help) return help(cli);
    if (positionals.length !== 1) throw new UsageError('restore takes exactly one archive file');
    const url = values['database-url'];
    if (typeof url !== 'string' || !/^(sqlite:.+|postgres(ql)?:\/\/.+)$/.test(url)) {
      throw new UsageError(
        'restore needs --database-url <url> (sqlite:<path> or postgres://…) of an empty database',
      );
    }
    const sqliteFile = url.startsWith('sqlite:') ? sqlitePath(url) : undefined;
    if (sqliteFile === ':memory:') {
      throw new UsageError(
        'restore into sqlite::memory: would keep nothing once the command exits; give a file (sqlite:<path>)',
      );
    }
    if (sqliteFile !== undefined && isDirectory(sqliteFile)) {
      throw new UsageError(
        `--database-url names the directory ${sqliteFile}; give a file in it (sqlite:<path>/taskyard.db)`,
      );
    }
    const sha256 = values.sha256;
    if (sha256 !== undefined && (typeof sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(sha256))) {
      throw new UsageError('--sha256 must be 64 hexadecimal characters');
    }
    return restore(cli, positionals[0] as string, url, sha256, values['adopt-archives'] === true);
  }
  if (command === 'simulate') {
    const { values, positionals } = parse(
      rest,
      { id: { type: 'string' }, url: { type: 'string' }, 'no-follow': { type: 'boolean' } },
      true,
    );
    if (values.help) return help(cli);
    if (positionals.length !== 1) throw new UsageError('simulate takes exactly one scenario file (JSON)');
    const apiKey = cli.env.TASKYARD_API_KEY?.trim();
    // Never a command-line flag: other users of the machine can read a process's arguments.
    if (!apiKey) throw new UsageError('simulate needs an API key with the write scope in TASKYARD_API_KEY');
    const url = (typeof values.url === 'string' ? values.url : cli.env.TASKYARD_URL) ?? DEFAULT_API_URL;
    if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) {
      throw new UsageError(
        `--url must be the api's http(s) address, e.g. http://127.0.0.1:3000 (got ${url})`,
      );
    }
    const id = values.id;
    if (id !== undefined && (typeof id !== 'string' || !SIMULATION_ID_PATTERN.test(id))) {
      throw new UsageError(`--id must match ${String(SIMULATION_ID_PATTERN)}`);
    }
    return simulate({
      file: positionals[0] as string,
      id,
      url: url.replace(/\/+$/, ''),
      apiKey,
      follow: values['no-follow'] !== true,
      pollMs: 500,
      out: cli.out,
      err: cli.err,
    });
  }
  throw new UsageError(`unknown command "${command}": use migrate, keys, restore or simulate`);
}

function help(cli: CliIo): number {
  cli.out(HELP);
  return EXIT_OK;
}

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

function parse<O extends Options>(args: readonly string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({
      args: [...args],
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals,
      strict: true,
    });
  } catch (err) {
    // parseArgs explains unknown flags, missing values and stray arguments itself.
    throw new UsageError((err as Error).message);
  }
}

function checkName(name: string | boolean | undefined): string {
  if (typeof name !== 'string') throw new UsageError('keys create needs --name <name>');
  const trimmed = name.trim();
  if (trimmed.length < 1 || trimmed.length > 100 || /\p{Cc}/u.test(trimmed)) {
    throw new UsageError('--name must be 1-100 characters without control characters');
  }
  return trimmed;
}

function checkScopes(list: string | boolean | undefined): Scope[] {
  if (typeof list !== 'string')
    throw new UsageError(`keys create needs --scopes <list>, e.g. --scopes read,write`);
  const parts = list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0) throw new UsageError(`--scopes is empty: use one or more of ${SCOPES.join(', ')}`);
  const unknown = parts.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (unknown.length > 0) {
    throw new UsageError(
      `unknown scope(s) ${unknown.map((s) => `"${s}"`).join(', ')}: use ${SCOPES.join(', ')}`,
    );
  }
  return [...new Set(parts as Scope[])];
}

async function withDatabase(cli: CliIo, fn: (handle: DatabaseHandle) => Promise<number>): Promise<number> {
  const config = loadConfig(cli.env);
  const handle = await createDatabase(config.DATABASE_URL);
  try {
    return await fn(handle);
  } finally {
    await handle.close();
  }
}

/**
 * Keys commands never change the schema themselves: applying migrations is a deliberate
 * step (`taskyard migrate`), and an older or newer code version must not do it in passing.
 */
function withMigratedDatabase(cli: CliIo, fn: (handle: DatabaseHandle) => Promise<number>): Promise<number> {
  return withDatabase(cli, async (handle) => {
    const status = await migrationStatus(handle, await loadMigrations());
    if (status.problems.length > 0) {
      cli.err(`taskyard: the database schema does not match this code:\n${bullets(status.problems)}`);
      return EXIT_FAILED;
    }
    if (status.pending.length > 0) {
      cli.err(
        `taskyard: ${handle.displayUrl} has ${status.pending.length} pending migration(s) (${status.pending.join(', ')}): run 'taskyard migrate' first`,
      );
      return EXIT_FAILED;
    }
    return fn(handle);
  });
}

async function migrate(handle: DatabaseHandle, cli: CliIo): Promise<number> {
  try {
    const applied = await migrateToLatest(handle, await loadMigrations());
    if (applied.length === 0) cli.out(`${handle.displayUrl}: up to date`);
    else for (const name of applied) cli.out(`applied ${name}`);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof MigrationIntegrityError) {
      cli.err(`taskyard: ${err.message}`);
      return EXIT_FAILED;
    }
    throw err;
  }
}

async function createKey(
  handle: DatabaseHandle,
  cli: CliIo,
  name: string,
  scopes: Scope[],
  json: boolean,
): Promise<number> {
  const key = generateApiKey();
  const record = await insertApiKey(handle.db, { name, scopes, keyHash: hashApiKey(key), now: cli.now() });
  if (json) {
    cli.out(JSON.stringify({ ...present(record), key }));
  } else {
    cli.out(`created key ${record.id} "${record.name}" (scopes ${record.scopes.join(',')})`);
    cli.out(`key: ${key}`);
    cli.out('Store it now: it is shown only this once (the database keeps only its hash).');
  }
  return EXIT_OK;
}

async function listKeys(handle: DatabaseHandle, cli: CliIo, json: boolean): Promise<number> {
  const keys = (await listApiKeys(handle.db)).map(present);
  if (json) {
    cli.out(JSON.stringify(keys));
    return EXIT_OK;
  }
  if (keys.length === 0) {
    cli.out("no API keys (create one with 'taskyard keys create --name <name> --scopes <list>')");
    return EXIT_OK;
  }
  const rows = [
    ['ID', 'NAME', 'SCOPES', 'CREATED', 'STATUS'],
    ...keys.map((k) => [
      k.id,
      k.name,
      k.scopes.join(','),
      k.created_at,
      k.revoked_at ? `revoked ${k.revoked_at}` : 'active',
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows)
    cli.out(
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );
  return EXIT_OK;
}

async function revokeKey(handle: DatabaseHandle, cli: CliIo, id: string): Promise<number> {
  if (await revokeApiKey(handle.db, id, cli.now())) {
    cli.out(`revoked key ${id}`);
    return EXIT_OK;
  }
  cli.err(`taskyard: no active key with id "${id}" (see taskyard keys list)`);
  return EXIT_FAILED;
}

function isDirectory(file: string): boolean {
  try {
    return statSync(file).isDirectory();
  } catch {
    return false;
  }
}

async function restore(
  cli: CliIo,
  archive: string,
  url: string,
  sha256: string | undefined,
  adoptArchives: boolean,
): Promise<number> {
  // Before the target is opened: opening a sqlite: URL creates the file, and a restore that
  // cannot even read its archive should leave nothing behind.
  try {
    await fsp.access(archive, fsConstants.R_OK);
  } catch (err) {
    cli.err(
      `taskyard: cannot read the archive ${archive}: ${(err as NodeJS.ErrnoException).code ?? toError(err).message}`,
    );
    return EXIT_FAILED;
  }
  // A restore that fails leaves no new SQLite file behind (it would hold the schema and
  // perhaps rows not yet settled); a file that was there before is the user's and stays.
  // (sqlite::memory: was refused as a target already.)
  const file = url.startsWith('sqlite:') ? sqlitePath(url) : undefined;
  const created = file !== undefined && !existsSync(file) ? file : undefined;
  let rowsCommitted = false;
  let finished = false;
  let handle: DatabaseHandle | undefined;
  try {
    handle = await createDatabase(url);
    const result = await restoreArchive(archive, handle, {
      migrations: await loadMigrations(),
      ...(sha256 === undefined ? {} : { expectedSha256: sha256 }),
      onRowsCommitted: () => (rowsCommitted = true),
    });
    // Part of the restore: until these rows are settled, the database must not be used.
    const settled = await settleRestoredBackups(handle.db, Date.now(), { adoptArchives });
    finished = true;
    const counts = Object.entries(result.rowCounts).map(([t, n]) => `${t} ${n}`);
    cli.out(
      `restored ${archive} (schema ${result.schemaVersion}, from ${result.sourceBackend}, sha256 ${result.sha256}) into ${handle.displayUrl}`,
    );
    cli.out(`rows: ${counts.join(', ') || 'none'}`);
    if (settled.backups.length + settled.verifications.length > 0) {
      cli.out(
        `marked failed, as unfinished in the archive (not to be run again here): ${settled.backups.length} backup(s)${settled.backups.length > 0 ? ` (${settled.backups.join(', ')})` : ''}, ${settled.verifications.length} verification(s)`,
      );
    }
    if (settled.imported > 0) {
      cli.out(
        adoptArchives
          ? `adopted ${settled.imported} restored backup(s): this install's retention deletes their archive files like its own`
          : `${settled.imported} restored backup(s) keep their archive files as the source install's: retention here deletes their rows, never the files (restore with --adopt-archives if the source install is gone for good)`,
      );
    }
    return EXIT_OK;
  } catch (err) {
    if (rowsCommitted) {
      // Stored but not finished (a later migration or the settling failed): say so plainly,
      // whatever the error, since the rows are there.
      cli.err(`taskyard: the restore stored its rows but did not finish: ${toError(err).message}`);
      if (!created) {
        cli.err(
          `taskyard: ${handle?.displayUrl ?? 'the target'} now holds restored rows that are not settled (unfinished backups are not marked failed): start nothing on it; empty it and run the restore again`,
        );
      }
      return EXIT_FAILED;
    }
    if (err instanceof BackupArchiveError || err instanceof MigrationIntegrityError) {
      cli.err(`taskyard: ${err.message}`);
      return EXIT_FAILED;
    }
    throw err;
  } finally {
    await handle?.close();
    if (!finished && created) {
      try {
        for (const f of [created, `${created}-wal`, `${created}-shm`]) await fsp.rm(f, { force: true });
        cli.err(`taskyard: removed ${created}, which this restore had created`);
      } catch (rmErr) {
        cli.err(
          `taskyard: could not remove ${created}, which this restore had created (${(rmErr as NodeJS.ErrnoException).code ?? toError(rmErr).message}): delete it before restoring again`,
        );
      }
    }
  }
}

function present(k: ApiKeyRecord) {
  return {
    id: k.id,
    name: k.name,
    scopes: k.scopes,
    created_at: new Date(k.created_at).toISOString(),
    revoked_at: k.revoked_at === null ? null : new Date(k.revoked_at).toISOString(),
  };
}

function bullets(lines: readonly string[]): string {
  return lines.map((l) => `  - ${l}`).join('\n');
}

function isMain(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  // exitCode, not exit(): stdout is flushed and every handle was closed by runCli.
  process.exitCode = await runCli(process.argv.slice(2));
}
