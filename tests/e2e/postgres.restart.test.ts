import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { expectEachBackupRanOnce, startBackupDrill } from '../helpers/backup-drill';
import { assertNoLeakedChildren, killAllChildren } from '../helpers/processes';
import { testRedisUrl, uniquePrefix, waitFor } from '../helpers/services';

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
    const { api, worker, baseUrl, create, gated } = await startBackupDrill({
      adminKey: ADMIN_KEY,
      databaseUrl: urlFor(dbName),
      prefix,
      backupDir,
      keyPrefix: 'restart',
    });

    const before = await Promise.all(Array.from({ length: BEFORE }, (_, i) => create(i)));

    // The outage begins while these requests are on their way.
    const during = gated(BEFORE, DURING);
    await setConnectionsAllowed(false);
    during.open();
    expect(await terminateSessions()).toBeGreaterThan(0);
    // Down until the api itself says so, then back.
    await waitFor(
      async () => (await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(5_000) })).status === 503,
      { what: 'the api to report the database unready', timeoutMs: 30_000 },
    );
    await terminateSessions();
    await setConnectionsAllowed(true);

    const accepted = [...before, ...(await during.done)];
    const ids = accepted.map((b) => b.id);
    expect(new Set(ids).size).toBe(BEFORE + DURING);
    await waitFor(
      async () => (await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(5_000) })).status === 200,
      { what: 'the api ready again', timeoutMs: 30_000 },
    );

    // A retry of any key after the outage replays its first answer.
    const replay = await create(BEFORE);
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
