import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { type BackupArchiveResult } from '../../shared/backup-archive-writer';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { restoreArchive } from '../../shared/db/restore';
import { checksumsOf, openMigrated, seedLargeOutbox, seedSmallDatabase } from '../helpers/backup-fixtures';
import { disposeTestDatabase } from '../helpers/test-database';
import { assertNoLeakedChildren, killAllChildren, spawnTsx } from '../helpers/processes';
import { BACKENDS } from '../helpers/services';

const ROWS = 1_000_000;
const MAX_RSS_BYTES = 200 * 1024 * 1024;

describe.each(BACKENDS)('a backup of a $backend database with a million rows', ({ makeUrl }) => {
  const urls: string[] = [];
  const handles: DatabaseHandle[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-backups-'));

  afterEach(assertNoLeakedChildren);
  afterAll(async () => {
    await killAllChildren();
    for (const h of handles) await h.close();
    for (const url of urls) await disposeTestDatabase(url);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('streams in under 200 MB of memory and restores into SQLite and Postgres with identical counts and checksums', async () => {
    const url = makeUrl('bk_large');
    urls.push(url);
    const source = await openMigrated(url);
    handles.push(source);
    await seedSmallDatabase(source, 1);
    await seedLargeOutbox(source, url, ROWS);

    // In a child process, so its peak RSS is the backup's alone.
    const child = spawnTsx(
      'backup-child',
      'tests/helpers/backup-child.ts',
      [url, dir, 'large.ndjson.gz'],
      process.env,
    );
    const exit = await child.waitForExit(120_000);
    expect(exit, child.text()).toEqual({ code: 0, signal: null });
    const { result, maxRssKb } = child.logs.at(-1) as { result: BackupArchiveResult; maxRssKb: number };
    expect(result.rowCounts).toMatchObject({ api_keys: 2, outbox: ROWS + 1, settings: 2 });
    expect(maxRssKb * 1024).toBeLessThan(MAX_RSS_BYTES);
    expect(fs.readdirSync(dir)).toEqual(['large.ndjson.gz']);

    const migrations = await loadMigrations();
    for (const kind of ['sqlite', 'postgres'] as const) {
      const targetUrl = BACKENDS.find((b) => b.backend === kind)!.makeUrl('bk_large_target');
      urls.push(targetUrl);
      const target = await createDatabase(targetUrl);
      handles.push(target);
      const restored = await restoreArchive(result.path, target, {
        migrations,
        expectedSha256: result.sha256,
      });
      expect(restored.rowCounts).toEqual(result.rowCounts);
      // Read back from the restored database itself.
      expect(await checksumsOf(targetUrl)).toEqual({
        rowCounts: result.rowCounts,
        contentSha256: result.contentSha256,
      });
      await target.close();
      await disposeTestDatabase(targetUrl);
    }
  }, 240_000);
});
