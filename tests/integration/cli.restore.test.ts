import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/taskyard';
import { writeBackupArchive, type BackupArchiveResult } from '../../shared/backup-archive-writer';
import { RESTORED_UNFINISHED } from '../../shared/db/backups-store';
import { createDatabase } from '../../shared/db/database';
import { openMigrated, readAllRows, seedSmallDatabase } from '../helpers/backup-fixtures';
import { disposeTestDatabase } from '../helpers/test-database';
import { BACKENDS, testSqliteUrl } from '../helpers/services';
import { createLogger } from '../../shared/logger';
import { applyBackupRetention } from '../../workers/processors/backups';

async function run(argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { env: {}, out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('taskyard restore', () => {
  const sourceUrl = testSqliteUrl('cli_restore_source');
  const urls: string[] = [sourceUrl];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-backups-'));
  let archive: BackupArchiveResult;

  beforeAll(async () => {
    const source = await openMigrated(sourceUrl);
    try {
      await seedSmallDatabase(source, 3);
    } finally {
      await source.close();
    }
    archive = await writeBackupArchive(sourceUrl, { dir, fileName: 'cli.ndjson.gz' });
  });

  afterAll(async () => {
    for (const url of urls) await disposeTestDatabase(url);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each(BACKENDS)(
    'restores a SQLite backup into an empty $backend database, then refuses it the second time',
    async ({ makeUrl }) => {
      const url = makeUrl('cli_restore');
      urls.push(url);
      const first = await run(['restore', archive.path, '--database-url', url, '--sha256', archive.sha256]);
      expect(first.err).toBe('');
      expect(first.code).toBe(0);
      expect(first.out).toContain(`sha256 ${archive.sha256}`);
      expect(first.out).toMatch(/rows: api_keys 2, .*outbox 3, .*settings 2/);

      const [source, target] = [await createDatabase(sourceUrl), await createDatabase(url)];
      try {
        expect(await readAllRows(target)).toEqual(await readAllRows(source));
      } finally {
        await source.close();
        await target.close();
      }

      const again = await run(['restore', archive.path, '--database-url', url]);
      expect(again.code).toBe(1);
      expect(again.err).toContain('already holds rows in api_keys');
    },
  );

  it('a file that is not gzip is called not an archive, not a damaged one', async () => {
    const url = testSqliteUrl('cli_restore_not_gzip');
    urls.push(url);
    const notGzip = path.join(dir, 'README.md');
    fs.writeFileSync(notGzip, '# not a backup\n');
    const r = await run(['restore', notGzip, '--database-url', url]);
    expect(r.code).toBe(1);
    expect(r.err.split('\n')[0]).toBe('taskyard: README.md is not a taskyard backup archive (not gzip data)');
    expect(fs.existsSync(url.slice('sqlite:'.length))).toBe(false);
  });

  it('refuses an archive whose sha256 is not the one given', async () => {
    const url = testSqliteUrl('cli_restore_sha');
    urls.push(url);
    const r = await run(['restore', archive.path, '--database-url', url, '--sha256', 'a'.repeat(64)]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`has sha256 ${archive.sha256}, expected ${'a'.repeat(64)}`);
  });

  it.each(BACKENDS)(
    'backups the archive holds as queued or running (its own included) are failed on $backend, not run again',
    async ({ makeUrl }) => {
      const src = testSqliteUrl('cli_restore_running_src');
      const url = makeUrl('cli_restore_running');
      urls.push(src, url);
      const source = await openMigrated(src);
      const ids = { own: randomUUID(), queued: randomUUID(), done: randomUUID() };
      try {
        const row = (id: string, status: 'queued' | 'running' | 'succeeded') => ({
          id,
          label: status,
          status,
          trigger: 'manual' as const,
          created_at: 1_000,
          ...(status === 'succeeded'
            ? {
                finished_at: 2_000,
                file_name: `taskyard-backup-${id}.ndjson.gz`,
                verify_status: 'running' as const,
              }
            : {}),
        });
        await source.db
          .insertInto('backups')
          .values([row(ids.own, 'running'), row(ids.queued, 'queued'), row(ids.done, 'succeeded')])
          .execute();
      } finally {
        await source.close();
      }
      const taken = await writeBackupArchive(src, { dir, fileName: 'running.ndjson.gz' });
      const r = await run(['restore', taken.path, '--database-url', url]);
      expect(r.code).toBe(0);
      expect(r.out).toContain(
        'marked failed, as unfinished in the archive (not to be run again here): 2 backup(s)',
      );
      expect(r.out).toContain('1 verification(s)');
      const target = await createDatabase(url);
      try {
        const rows = await target.db.selectFrom('backups').selectAll().orderBy('label').execute();
        const byId = new Map(rows.map((b) => [b.id, b]));
        for (const id of [ids.own, ids.queued]) {
          expect(byId.get(id)).toMatchObject({ status: 'failed', error: RESTORED_UNFINISHED });
          expect(byId.get(id)!.finished_at).not.toBeNull();
        }
        expect(byId.get(ids.done)).toMatchObject({
          status: 'succeeded',
          error: null,
          verify_status: 'failed',
          verify_error: RESTORED_UNFINISHED,
        });
      } finally {
        await target.close();
      }
    },
  );

  it.each(BACKENDS)(
    'retention on the restored $backend database deletes restored rows but never their archives, which the source install still lists',
    async ({ makeUrl }) => {
      const src = testSqliteUrl('cli_restore_keep_src');
      const url = makeUrl('cli_restore_keep');
      urls.push(src, url);
      // Both installs share one BACKUP_DIR, as when a user moves from SQLite to Postgres in place.
      const shared = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-shared-backups-'));
      const succeeded = (id: string, finishedAt: number) => ({
        id,
        label: id.slice(0, 8),
        status: 'succeeded' as const,
        trigger: 'manual' as const,
        file_name: `taskyard-backup-${id}.ndjson.gz`,
        created_at: finishedAt,
        finished_at: finishedAt,
      });
      const sourceIds = [randomUUID(), randomUUID(), randomUUID()];
      const source = await openMigrated(src);
      try {
        await source.db
          .insertInto('backups')
          .values(sourceIds.map((id, i) => succeeded(id, 1_000 * (i + 1))))
          .execute();
      } finally {
        await source.close();
      }
      for (const id of sourceIds) fs.writeFileSync(path.join(shared, `taskyard-backup-${id}.ndjson.gz`), id);
      const taken = await writeBackupArchive(src, { dir, fileName: 'keep.ndjson.gz' });
      const restored = await run(['restore', taken.path, '--database-url', url]);
      expect(restored.code).toBe(0);
      expect(restored.out).toContain(
        "3 restored backup(s) keep their archive files as the source install's: retention here deletes their rows, never the files (restore with --adopt-archives if the source install is gone for good)",
      );

      const target = await createDatabase(url);
      try {
        // One backup of the new install's own, the oldest, so retention takes it too.
        const ownId = randomUUID();
        await target.db.insertInto('backups').values(succeeded(ownId, 500)).execute();
        fs.writeFileSync(path.join(shared, `taskyard-backup-${ownId}.ndjson.gz`), ownId);

        const config = { BACKUP_DIR: shared, BACKUP_KEEP_LAST: 1 };
        const log = createLogger({ level: 'silent' });
        expect(await applyBackupRetention({ db: target, config }, log, { dryRun: true })).toEqual({
          backups: 3,
          files: 1,
        });
        expect(await applyBackupRetention({ db: target, config }, log)).toEqual({ backups: 3, files: 1 });

        const left = await target.db.selectFrom('backups').select('id').execute();
        expect(left.map((r) => r.id)).toEqual([sourceIds[2]]);
        // Every archive of the source install is still there; only the new install's own went.
        expect(fs.readdirSync(shared).sort()).toEqual(
          sourceIds.map((id) => `taskyard-backup-${id}.ndjson.gz`).sort(),
        );
      } finally {
        await target.close();
        fs.rmSync(shared, { recursive: true, force: true });
      }
    },
  );

  it("with --adopt-archives the restored backups are this install's own: retention deletes their files too", async () => {
    const src = testSqliteUrl('cli_restore_adopt_src');
    const url = testSqliteUrl('cli_restore_adopt');
    urls.push(src, url);
    const own = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-adopt-backups-'));
    const ids = [randomUUID(), randomUUID()];
    const source = await openMigrated(src);
    try {
      await source.db
        .insertInto('backups')
        .values(
          ids.map((id, i) => ({
            id,
            label: null,
            status: 'succeeded' as const,
            trigger: 'manual' as const,
            file_name: `taskyard-backup-${id}.ndjson.gz`,
            created_at: 1_000 * (i + 1),
            finished_at: 1_000 * (i + 1),
          })),
        )
        .execute();
    } finally {
      await source.close();
    }
    for (const id of ids) fs.writeFileSync(path.join(own, `taskyard-backup-${id}.ndjson.gz`), id);
    const taken = await writeBackupArchive(src, { dir, fileName: 'adopt.ndjson.gz' });
    const r = await run(['restore', taken.path, '--database-url', url, '--adopt-archives']);
    expect(r.code).toBe(0);
    expect(r.out).toContain(
      "adopted 2 restored backup(s): this install's retention deletes their archive files like its own",
    );
    const target = await createDatabase(url);
    try {
      const log = createLogger({ level: 'silent' });
      expect(
        await applyBackupRetention({ db: target, config: { BACKUP_DIR: own, BACKUP_KEEP_LAST: 1 } }, log),
      ).toEqual({ backups: 1, files: 1 });
      expect(fs.readdirSync(own)).toEqual([`taskyard-backup-${ids[1]}.ndjson.gz`]);
    } finally {
      await target.close();
      fs.rmSync(own, { recursive: true, force: true });
    }
  });

  it('a SQLite archive holding U+0000 in text is refused by Postgres with the table named and what to do', async () => {
    const src = testSqliteUrl('cli_restore_nul_src');
    const url = BACKENDS[1]!.makeUrl('cli_restore_nul');
    urls.push(src, url);
    const source = await openMigrated(src);
    try {
      // Written before the api refused such text; SQLite stores it.
      await source.db
        .insertInto('backups')
        .values({ id: randomUUID(), label: 'a\u0000b', status: 'failed', trigger: 'manual', created_at: 1 })
        .execute();
    } finally {
      await source.close();
    }
    const taken = await writeBackupArchive(src, { dir, fileName: 'nul.ndjson.gz' });
    const r = await run(['restore', taken.path, '--database-url', url]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('the target refused rows of table backups');
    expect(r.err).toContain('U+0000');
    expect(r.err).toContain('take a new backup');
  });

  it('a restore that fails part-way removes the SQLite file it created, and keeps one that was there', async () => {
    // The archive without its last line (the trailer): every row is read, then it is refused.
    const lines = zlib.gunzipSync(fs.readFileSync(archive.path)).toString('utf8').trimEnd().split('\n');
    const cut = path.join(dir, 'cut.ndjson.gz');
    fs.writeFileSync(cut, zlib.gzipSync(`${lines.slice(0, -1).join('\n')}\n`));
    const url = testSqliteUrl('cli_restore_cut');
    urls.push(url);
    const file = url.slice('sqlite:'.length);
    const r = await run(['restore', cut, '--database-url', url]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('taskyard: ');
    expect(r.err).toContain(`removed ${file}, which this restore had created`);
    for (const f of [file, `${file}-wal`, `${file}-shm`]) expect(fs.existsSync(f), f).toBe(false);

    // A file that existed before the restore is the user's: it stays, whatever the outcome.
    (await createDatabase(url)).close();
    expect(fs.existsSync(file)).toBe(true);
    const again = await run(['restore', cut, '--database-url', url]);
    expect(again.code).toBe(1);
    expect(again.err).not.toContain('removed');
    expect(fs.existsSync(file)).toBe(true);
  });

  it('a missing archive file exits 1 naming it, and leaves no database file behind', async () => {
    const url = testSqliteUrl('cli_restore_missing');
    urls.push(url);
    const r = await run(['restore', path.join(dir, 'nope.ndjson.gz'), '--database-url', url]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('cannot read the archive');
    expect(r.err).toContain('nope.ndjson.gz');
    // Nothing was created for a restore that could not start.
    expect(fs.existsSync(url.slice('sqlite:'.length))).toBe(false);
  });

  it.each([
    [['restore', '--database-url', 'sqlite:x.db'], 'restore takes exactly one archive file'],
    [['restore', 'a.gz'], 'restore needs --database-url'],
    [['restore', 'a.gz', '--database-url', 'mysql://x'], 'restore needs --database-url'],
    [
      ['restore', 'a.gz', '--database-url', 'sqlite:x.db', '--sha256', 'xyz'],
      '--sha256 must be 64 hexadecimal',
    ],
    [['restore', 'a.gz', '--database-url', 'sqlite::memory:'], 'would keep nothing once the command exits'],
    [['restore', 'a.gz', '--database-url', `sqlite:${os.tmpdir()}`], `names the directory ${os.tmpdir()}`],
  ])('%j exits 64 with a clear message', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(64);
    expect(r.err).toContain(message);
  });
});
