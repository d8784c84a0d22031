import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { writeBackupArchive } from '../../shared/backup-archive-writer';
import type { DatabaseHandle } from '../../shared/db/database';
import { verifyBackupArchive } from '../../shared/db/restore';
import { checksumsOf, openMigrated, seedSmallDatabase } from '../helpers/backup-fixtures';
import { disposeTestDatabase } from '../helpers/test-database';
import { BACKENDS } from '../helpers/services';

describe.each(BACKENDS)('a backup of a $backend database that is written to meanwhile', ({ makeUrl }) => {
  const url = makeUrl('bk_consistency');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-backups-'));
  let source: DatabaseHandle | undefined;

  afterAll(async () => {
    await source?.close();
    await disposeTestDatabase(url);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('holds exactly the rows of the moment it started, whatever the app commits between chunks', async () => {
    const db = (source = await openMigrated(url)).db;
    await seedSmallDatabase(source, 25);
    const atStart = await checksumsOf(url);

    // The app's own connection commits between the backup's chunks: rows behind and ahead of
    // the keyset cursor, an update and deletes of rows not read yet, and changes to tables
    // already read and not read yet.
    let writes = 0;
    const archive = await writeBackupArchive(url, {
      dir,
      fileName: 'during-writes.ndjson.gz',
      chunkRows: 5,
      onProgress: async ({ table }) => {
        if (table !== 'outbox') return;
        writes++;
        const row = (id: string) => ({
          id,
          queue: 'backups',
          job_name: 'create-backup',
          job_id: id,
          payload: '{}',
          created_at: 1,
          dispatched_at: null,
          last_error: null,
        });
        await db
          .insertInto('outbox')
          .values(row(`o-zzzz-${writes}`))
          .execute();
        await db
          .insertInto('outbox')
          .values(row(`o-0000-${writes}`))
          .execute();
        await db.updateTable('outbox').set({ attempts: 99 }).where('id', '=', 'o-0024').execute();
        await db
          .deleteFrom('outbox')
          .where('id', '=', `o-00${19 + writes}`)
          .execute();
        await db.deleteFrom('api_keys').where('id', '=', 'k1').execute();
        await db
          .insertInto('settings')
          .values({ key: `during-${writes}`, value: '1', updated_at: 1 })
          .execute();
      },
    });

    expect(writes).toBe(5);
    expect({ rowCounts: archive.rowCounts, contentSha256: archive.contentSha256 }).toEqual(atStart);
    // The writes really happened, and were not blocked by the backup's read transaction.
    const now = await checksumsOf(url);
    expect(now.rowCounts).toMatchObject({
      api_keys: 1,
      outbox: 25 + 5 + 5 - 5,
      settings: 2 + 5,
    });

    const verified = await verifyBackupArchive(archive.path, {
      migrations: await loadMigrations(),
      expectedSha256: archive.sha256,
    });
    expect(verified).toMatchObject({
      ok: true,
      rowCounts: atStart.rowCounts,
      contentSha256: atStart.contentSha256,
    });
  });
});
