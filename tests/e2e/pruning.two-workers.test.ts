import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { migrateToLatest } from '../../shared/db/migrate';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { storeSchedule } from '../../queues/schedules';
import { assertNoLeakedChildren, killAllChildren, spawnTsx, type SpawnedProcess } from '../helpers/processes';
import { BACKENDS, testRedisUrl, uniquePrefix, waitFor } from '../helpers/services';

/**
 * Two prune jobs taken by two worker PROCESSES at the same moment: the `pruning` scope lets
 * exactly one run; the other is recorded skipped at once (it never waits). The jobs are held
 * at a start gate (the queue is paused) until both workers are ready.
 */

const EXPIRED = 20_000;

describe.each(BACKENDS)('pruning with two worker processes ($backend)', ({ makeUrl }) => {
  let redis: Redis;
  let db: DatabaseHandle | undefined;
  let prefix: string;
  let databaseUrl: string;
  let backupDir: string;

  beforeAll(() => {
    redis = createRedis(testRedisUrl(), 'client');
  });
  afterEach(async () => {
    await assertNoLeakedChildren();
    const schema = new URL(databaseUrl).searchParams.get('schema');
    if (db?.dialect === 'postgres' && schema) {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db.db);
    }
    await db?.close();
    db = undefined;
    await deleteKeysWithPrefix(redis, prefix);
    fs.rmSync(backupDir, { recursive: true, force: true });
  });
  afterAll(async () => {
    await killAllChildren();
    await redis.quit();
  });

  const startWorker = async (name: string): Promise<SpawnedProcess> => {
    const proc = spawnTsx(name, 'workers/main.ts', ['--queues', 'pruning'], {
      ...process.env,
      TASKYARD_ENV: 'test',
      DATABASE_URL: databaseUrl,
      REDIS_URL: testRedisUrl(),
      REDIS_PREFIX: prefix,
      BACKUP_DIR: backupDir,
      LOG_LEVEL: 'info',
    });
    await proc.waitForLog((l) => l.msg === 'worker ready', { what: `${name} ready`, timeoutMs: 30_000 });
    return proc;
  };

  it('exactly one of two simultaneous prune jobs runs; the other is recorded skipped', async () => {
    prefix = uniquePrefix('prune2w');
    databaseUrl = makeUrl('prune2w');
    backupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-prune2w-'));
    db = await createDatabase(databaseUrl);
    await migrateToLatest(db, await loadMigrations());
    const now = Date.now();
    // Only our two jobs: the hourly scheduler stays off.
    await storeSchedule(db.db, 'pruning', { every_ms: 3_600_000, enabled: false }, now);
    for (let i = 0; i < EXPIRED; i += 500) {
      await db.db
        .insertInto('idempotency_keys')
        .values(
          Array.from({ length: 500 }, () => ({
            principal_id: 'p',
            key: randomUUID(),
            fingerprint: 'f',
            state: 'completed' as const,
            claim_token: 'c',
            lease_expires_at: null,
            response_status: 202,
            response_body: '{}',
            response_location: null,
            created_at: now - 48 * 3_600_000,
            expires_at: now - 24 * 3_600_000,
          })),
        )
        .execute();
    }
    const runIds = [randomUUID(), randomUUID()];
    for (const id of runIds) {
      await db.db
        .insertInto('pruning_runs')
        .values({ id, trigger: 'manual', dry_run: 0, status: 'queued', created_at: now })
        .execute();
    }

    // The start gate: both jobs wait in a paused queue until both workers are ready.
    const queue = new Queue('pruning', { connection: redis, prefix });
    await queue.pause();
    for (const id of runIds)
      await queue.add('prune', { run_id: id, dry_run: false }, { jobId: `prune-${id}` });
    const workers = await Promise.all([startWorker('worker-a'), startWorker('worker-b')]);
    await queue.resume();

    const rows = await waitFor(
      async () => {
        const rs = await db!.db.selectFrom('pruning_runs').selectAll().where('id', 'in', runIds).execute();
        return rs.every((r) => r.status !== 'queued' && r.status !== 'running') ? rs : undefined;
      },
      { timeoutMs: 30_000, what: 'both pruning runs finished' },
    );
    expect(rows.map((r) => r.status).sort()).toEqual(['skipped', 'succeeded']);
    const ran = rows.find((r) => r.status === 'succeeded')!;
    expect(JSON.parse(ran.counts!)).toMatchObject({ idempotency_keys: EXPIRED });
    const skipped = rows.find((r) => r.status === 'skipped')!;
    expect(skipped.counts).toBeNull();
    expect(skipped.started_at).toBeNull();
    const left = await db.db
      .selectFrom('idempotency_keys')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(left.n)).toBe(0);

    // One process ran it, the other skipped: each took one of the two jobs.
    // The rows are written before the log lines reach our end of the pipes: wait for both.
    const said = (msg: string) => workers.filter((w) => w.logs.some((l) => l.msg === msg)).length;
    await waitFor(
      () => said('pruning run succeeded') === 1 && said('pruning scope busy: run skipped') === 1,
      {
        what: 'one worker ran and the other skipped',
      },
    );
    await waitFor(async () => (await queue.getJobCountByTypes('completed')) === 2, {
      what: 'both jobs completed',
    });

    await queue.close();
    for (const w of workers) w.signal('SIGTERM');
    for (const w of workers) expect((await w.waitForExit(30_000)).code).toBe(0);
  });
});
