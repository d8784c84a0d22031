import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { createClient } from '../../shared/client';
import type { BackupView } from '../../shared/contract/backups';
import type { DatabaseHandle } from '../../shared/db/database';
import { spawnTsx, type SpawnedProcess } from './processes';
import { startGate, testRedisUrl, waitFor } from './services';

/** A real api and a worker for backups (and maintenance), with a client that rides out an outage. */
export interface BackupDrill {
  api: SpawnedProcess;
  worker: SpawnedProcess;
  baseUrl: string;
  /** Backup number `i`: label `r-<i>`, Idempotency-Key `<keyPrefix>-<i>`. */
  create(i: number): Promise<BackupView>;
  /** Backups `from` … `from + count - 1`, each sent only once `open()` is called. */
  gated(from: number, count: number): { open(): void; done: Promise<BackupView[]> };
}

/**
 * Spawn the api and a `backups,maintenance` worker on `databaseUrl` and `prefix`, and wait
 * until both are ready. The relay and reconciler tick every second, so an outage drill
 * converges quickly; BACKUP_KEEP_LAST is high enough that retention deletes nothing.
 */
export async function startBackupDrill(a: {
  adminKey: string;
  databaseUrl: string;
  prefix: string;
  backupDir: string;
  keyPrefix: string;
}): Promise<BackupDrill> {
  const env = {
    ...process.env,
    TASKYARD_ENV: 'test',
    TASKYARD_ADMIN_KEY: a.adminKey,
    DATABASE_URL: a.databaseUrl,
    REDIS_URL: testRedisUrl(),
    REDIS_PREFIX: a.prefix,
    BACKUP_DIR: a.backupDir,
    BACKUP_KEEP_LAST: '100',
    LOG_LEVEL: 'info',
    SCHEDULE_CHECK_SECONDS: '1',
    RECONCILE_EVERY_MS: '1000',
    RECONCILE_AFTER_MS: '0',
  };
  const api = spawnTsx('api', 'api/server.ts', [], { ...env, PORT: '0' });
  const listening = await api.waitForLog((l) => l.msg === 'api listening', {
    what: 'api listening',
    timeoutMs: 30_000,
  });
  const worker = spawnTsx('worker', 'workers/main.ts', ['--queues', 'backups,maintenance'], env);
  await worker.waitForLog((l) => l.msg === 'worker ready', { what: 'worker ready', timeoutMs: 30_000 });
  const baseUrl = `http://127.0.0.1:${String(listening.port)}`;
  // Retries long enough to outlast the 30 s lease of a claim whose release an outage refused
  // (the client then gets 409 in-flight until the lease lapses). Fixed jitter.
  const client = createClient({
    baseUrl,
    apiKey: a.adminKey,
    retry: { attempts: 60, baseDelayMs: 100, maxDelayMs: 1000 },
    random: () => 0.5,
  });
  const create = (i: number) =>
    client.createBackup({ label: `r-${i}`, idempotencyKey: `${a.keyPrefix}-${i}` });
  return {
    api,
    worker,
    baseUrl,
    create,
    gated(from, count) {
      const gate = startGate();
      const done = Promise.all(
        Array.from({ length: count }, async (_, i) => {
          await gate.wait();
          return create(from + i);
        }),
      );
      return { open: () => gate.open(), done };
    },
  };
}

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
