import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { DatabaseHandle } from '../../shared/db/database';
import type { SpawnedProcess } from './processes';
import { waitFor } from './services';

/**
 * After an outage drill: every manual backup in `ids` succeeds, exactly the rows in `ids`
 * exist, each has its archive in `backupDir` (none half-written), and the worker logged one
 * `backup succeeded` per backup, i.e. each ran to completion once. A timeout says what the
 * rows and the processes' error lines were, so a CI failure can be read from its output.
 */
export async function expectEachBackupRanOnce(a: {
  db: DatabaseHandle;
  ids: readonly string[];
  backupDir: string;
  api: SpawnedProcess;
  worker: SpawnedProcess;
  timeoutMs: number;
}): Promise<void> {
  const manual = () =>
    a.db.db.selectFrom('backups').selectAll().where('trigger', '=', 'manual').orderBy('label').execute();
  await waitFor(async () => (await manual()).every((r) => r.status === 'succeeded'), {
    what: 'every manual backup succeeded',
    timeoutMs: a.timeoutMs,
    intervalMs: 200,
  }).catch(async (e: unknown) => {
    const rows = await manual();
    const worst = [...a.api.logs, ...a.worker.logs].filter((l) => (l.level ?? 0) >= 50);
    throw new Error(
      `${(e as Error).message}; rows ${JSON.stringify(rows.map((r) => [r.label, r.status, r.attempts]))}; ` +
        `error lines ${JSON.stringify(worst.map((l) => [l.name, l.msg]))}`,
      { cause: e },
    );
  });
  const rows = await manual();
  expect(rows.map((r) => r.id).sort()).toEqual([...a.ids].sort());

  const files = fs.readdirSync(a.backupDir);
  for (const row of rows) expect(files).toContain(path.basename(row.file_name!));
  expect(files.filter((f) => f.endsWith('.tmp'))).toEqual([]);
  // The row commits before the worker logs it, and the line still has to cross the pipe.
  const succeededLines = () =>
    a.worker.logs.filter((l) => l.msg === 'backup succeeded' && a.ids.includes(String(l.backup_id)));
  await waitFor(() => succeededLines().length >= a.ids.length, {
    what: 'a backup succeeded line per backup',
    timeoutMs: 10_000,
  });
  expect(
    succeededLines()
      .map((l) => String(l.backup_id))
      .sort(),
  ).toEqual([...a.ids].sort());
}
