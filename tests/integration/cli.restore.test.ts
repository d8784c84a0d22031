import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/taskyard';
import { writeBackupArchive, type BackupArchiveResult } from '../../shared/backup-archive-writer';
import { createDatabase } from '../../shared/db/database';
import { openMigrated, readAllRows, seedSmallDatabase } from '../helpers/backup-fixtures';
import { disposeTestDatabase } from '../helpers/test-database';
import { BACKENDS, testSqliteUrl } from '../helpers/services';

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

  it('refuses an archive whose sha256 is not the one given', async () => {
    const url = testSqliteUrl('cli_restore_sha');
    urls.push(url);
    const r = await run(['restore', archive.path, '--database-url', url, '--sha256', 'a'.repeat(64)]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`has sha256 ${archive.sha256}, expected ${'a'.repeat(64)}`);
  });

  it('a missing archive file exits 1 naming it', async () => {
    const url = testSqliteUrl('cli_restore_missing');
    urls.push(url);
    const r = await run(['restore', path.join(dir, 'nope.ndjson.gz'), '--database-url', url]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('nope.ndjson.gz');
  });

  it.each([
    [['restore', '--database-url', 'sqlite:x.db'], 'restore takes exactly one archive file'],
    [['restore', 'a.gz'], 'restore needs --database-url'],
    [['restore', 'a.gz', '--database-url', 'mysql://x'], 'restore needs --database-url'],
    [
      ['restore', 'a.gz', '--database-url', 'sqlite:x.db', '--sha256', 'xyz'],
      '--sha256 must be 64 hexadecimal',
    ],
  ])('%j exits 64 with a clear message', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(64);
    expect(r.err).toContain(message);
  });
});
