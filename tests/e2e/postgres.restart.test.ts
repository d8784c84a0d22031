import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createClient } from '../../shared/client';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { expectEachBackupRanOnce } from '../helpers/backups-ran-once';
import { assertNoLeakedChildren, killAllChildren, spawnTsx, type SpawnedProcess } from '../helpers/processes';
import { startGate, testRedisUrl, uniquePrefix, waitFor } from '../helpers/services';

/**
 * A Postgres outage under load, with real api and worker processes: every connection of the
 * database is cut and new ones are refused (as during a server restart) while clients are
 * creating backups. Every accepted request is answered once its retries get through, and
 * each backup runs to completion exactly once. Postgres only: SQLite has no server to restart.
 *
 * The outage is confined to a database of this test's own (CREATE DATABASE, then
 * ALLOW_CONNECTIONS false and pg_terminate_backend on it), so the shared server and the
 * other test files are untouched.
 */

const ADMIN_KEY = 'ty_e2e_admin_key_restart_0123456789abcdef';
const BASE = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const BEFORE = 8;
const DURING = 12;

let admin: pg.Client | undefined;
let dbName: string | undefined;
let db: DatabaseHandle | undefined;
let prefix: string | undefined;
let backupDir: string | undefined;

function urlFor(database: string): string {
  const u = new URL(BASE);
  u.pathname = `/${database}`;
  return u.toString();
}

async function setConnectionsAllowed(allowed: boolean): Promise<void> {
  await admin!.query(`alter database ${pg.escapeIdentifier(dbName!)} allow_connections ${allowed}`);
}

/** Cut every session of the test's database (not this admin session, which is on another). */
async function terminateSessions(): Promise<number> {
  const r = await admin!.query<{ n: string }>(
    'select count(pg_terminate_backend(pid)) as n from pg_stat_activity where datname = $1',
    [dbName],
  );
  return Number(r.rows[0]!.n);
}

afterEach(async () => {
  await killAllChildren();
  await assertNoLeakedChildren();
  await db?.close();
  db = undefined;
  if (admin && dbName) {
    await setConnectionsAllowed(true).catch(() => undefined);
    await terminateSessions().catch(() => undefined);
    await admin.query(`drop database if exists ${pg.escapeIdentifier(dbName)}`);
  }
  if (prefix) {
    const redis = createRedis(testRedisUrl(), 'client');
    await deleteKeysWithPrefix(redis, prefix);
    await redis.quit();
  }
  if (backupDir) fs.rmSync(backupDir, { recursive: true, force: true });
});
afterAll(async () => {
  await admin?.end();
});

describe('a Postgres restart under load', () => {
  it('loses no accepted backup and runs none twice when every connection is cut and refused for a while', async () => {
    admin = new pg.Client({ connectionString: BASE });
    await admin.connect();
    dbName = `ty_restart_${randomBytes(5).toString('hex')}`;
    await admin.query(`create database ${pg.escapeIdentifier(dbName)}`);
    prefix = uniquePrefix('pgrestart');
    backupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-pgrestart-'));
    const env = {
      ...process.env,
      TASKYARD_ENV: 'test',
      TASKYARD_ADMIN_KEY: ADMIN_KEY,
      DATABASE_URL: urlFor(dbName),
      REDIS_URL: testRedisUrl(),
      REDIS_PREFIX: prefix,
      BACKUP_DIR: backupDir,
      BACKUP_KEEP_LAST: '100',
      LOG_LEVEL: 'info',
      SCHEDULE_CHECK_SECONDS: '1',
      RECONCILE_EVERY_MS: '1000',
      RECONCILE_AFTER_MS: '0',
    };
    const api: SpawnedProcess = spawnTsx('api', 'api/server.ts', [], { ...env, PORT: '0' });
    const listening = await api.waitForLog((l) => l.msg === 'api listening', {
      what: 'api listening',
      timeoutMs: 30_000,
    });
    const worker = spawnTsx('worker', 'workers/main.ts', ['--queues', 'backups,maintenance'], env);
    await worker.waitForLog((l) => l.msg === 'worker ready', { what: 'worker ready', timeoutMs: 30_000 });
    const baseUrl = `http://127.0.0.1:${String(listening.port)}`;

    // Retries long enough to outlast the 30 s lease of a claim whose release the outage
    // refused (the client then gets 409 in-flight until the lease lapses). Fixed jitter.
    const client = createClient({
      baseUrl,
      apiKey: ADMIN_KEY,
      retry: { attempts: 60, baseDelayMs: 100, maxDelayMs: 1000 },
      random: () => 0.5,
    });
    const create = (i: number) => client.createBackup({ label: `r-${i}`, idempotencyKey: `restart-${i}` });

    const before = await Promise.all(Array.from({ length: BEFORE }, (_, i) => create(i)));

    // The outage begins while these requests are on their way.
    const gate = startGate();
    const during = Promise.all(
      Array.from({ length: DURING }, async (_, i) => {
        await gate.wait();
        return create(BEFORE + i);
      }),
    );
    await setConnectionsAllowed(false);
    gate.open();
    expect(await terminateSessions()).toBeGreaterThan(0);
    // Down until the api itself says so, then back.
    await waitFor(
      async () => (await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(5_000) })).status === 503,
      { what: 'the api to report the database unready', timeoutMs: 30_000 },
    );
    await terminateSessions();
    await setConnectionsAllowed(true);

    const accepted = [...before, ...(await during)];
    const ids = accepted.map((b) => b.id);
    expect(new Set(ids).size).toBe(BEFORE + DURING);
    await waitFor(
      async () => (await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(5_000) })).status === 200,
      { what: 'the api ready again', timeoutMs: 30_000 },
    );

    // A retry of any key after the outage replays its first answer.
    const replay = await client.createBackup({ label: `r-${BEFORE}`, idempotencyKey: `restart-${BEFORE}` });
    expect(replay.id).toBe(ids[BEFORE]);

    db = await createDatabase(urlFor(dbName));
    await expectEachBackupRanOnce({ db, ids, backupDir, api, worker, timeoutMs: 40_000 });

    // Nothing was a 500 or a crash: the outage's failures were 503s, retried by the client.
    expect([...api.logs, ...worker.logs].filter((l) => (l.level ?? 0) >= 50).map((l) => l.msg)).toEqual([]);
    expect(api.logs.some((l) => l.msg === 'request failed' && l.problem === 'dependency-unavailable')).toBe(
      true,
    );
    // Both processes rode out the outage: neither restarted, both stop cleanly.
    api.signal('SIGTERM');
    worker.signal('SIGTERM');
    expect((await api.waitForExit(30_000)).code).toBe(0);
    expect((await worker.waitForExit(30_000)).code).toBe(0);
  }, 150_000);
});
