/**
 * Pruning rate while the api serves load (issue 5).
 *
 * For each backend: a migrated database with BENCH_PRUNE_ROWS (default 1,000,000) expired
 * idempotency records; the api runs as its own process (`api/server.ts`) and autocannon sends
 * authenticated `GET /v1/pruning/runs/:id` (auth + one read per request) for
 * BENCH_PRUNE_BASELINE_S seconds without pruning, then again while the
 * prune job in a real worker process (`workers/main.ts --queues pruning`) over all the rows.
 * Figures: rows/s, api p99 without and during pruning, and their ratio (target ≤ 2).
 *
 * Run: `node --import tsx bench/pruning.ts [sqlite|postgres ...]` (both by default).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import { sql } from 'kysely';
import { loadMigrations } from '../migrations/index';
import { loadConfig } from '../shared/config';
import { createDatabase } from '../shared/db/database';
import { migrateToLatest } from '../shared/db/migrate';
import { createLogger } from '../shared/logger';
import { createRedis, deleteKeysWithPrefix } from '../shared/redis';
import { createQueues } from '../queues/producer';
import { enabledQueues } from '../queues/registry';
import { storeSchedule } from '../queues/schedules';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROWS = Number(process.env.BENCH_PRUNE_ROWS ?? 1_000_000);
const BASELINE_S = Number(process.env.BENCH_PRUNE_BASELINE_S ?? 10);
const PG_BASE = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ADMIN_KEY = `ty_bench_prune_${randomUUID().replace(/-/g, '')}`;

export interface PruningFigures {
  backend: 'sqlite' | 'postgres';
  rows: number;
  seconds: number;
  rows_per_s: number;
  p99_ms_without: number;
  p99_ms_during: number;
  p99_ratio: number;
  requests_during: number;
}

function seedSqlite(file: string, rows: number, expiresAt: number): void {
  const db = new SQLite(file);
  try {
    db.pragma('journal_mode = WAL');
    const ins = db.prepare(
      `insert into idempotency_keys (principal_id, key, fingerprint, state, claim_token, lease_expires_at,
        response_status, response_body, response_location, created_at, expires_at)
       values ('bench', ?, 'f', 'completed', 'c', null, 202, '{}', null, ?, ?)`,
    );
    db.transaction(() => {
      for (let i = 0; i < rows; i++) ins.run(`k-${i}`, expiresAt - 86_400_000, expiresAt);
    })();
  } finally {
    db.close();
  }
}

async function seedPostgres(url: string, rows: number, expiresAt: number): Promise<void> {
  const u = new URL(url);
  const schema = u.searchParams.get('schema')!;
  u.searchParams.delete('schema');
  const client = new pg.Client({ connectionString: u.toString() });
  await client.connect();
  try {
    await client.query(`set search_path to "${schema}"`);
    await client.query(
      `insert into idempotency_keys (principal_id, key, fingerprint, state, claim_token, lease_expires_at,
        response_status, response_body, response_location, created_at, expires_at)
       select 'bench', 'k-' || g, 'f', 'completed', 'c', null, 202, '{}', null, $1::bigint, $2::bigint
       from generate_series(1, $3::int) g`,
      [expiresAt - 86_400_000, expiresAt, rows],
    );
    await client.query('analyze idempotency_keys');
  } finally {
    await client.end();
  }
}

/** Spawn a taskyard process and resolve with the log line `msg` (the api's carries its port). */
async function startProcess(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  msg: string,
): Promise<{ child: ChildProcess; line: { port?: number } }> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<{ port?: number }>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${script} did not log "${msg}" within 30 s`)), 30_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      for (const line of buf.split('\n')) {
        try {
          const l = JSON.parse(line) as { msg?: string; port?: number };
          if (l.msg === msg) {
            clearTimeout(timer);
            resolve(l);
          }
        } catch {
          // partial or non-JSON line
        }
      }
      buf = buf.slice(buf.lastIndexOf('\n') + 1);
    });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${String(code)}`)));
  });
  child.stdout!.resume();
  return { child, line };
}

function load(url: string, runId: string, durationS: number | undefined) {
  return autocannon({
    url: `${url}/v1/pruning/runs/${runId}`,
    connections: 10,
    ...(durationS === undefined ? { duration: 3600 } : { duration: durationS }),
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
  });
}

export async function benchPruning(backend: 'sqlite' | 'postgres'): Promise<PruningFigures> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-bench-prune-'));
  const schema = `bench_prune_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  const databaseUrl =
    backend === 'sqlite' ? `sqlite:${path.join(dir, 'taskyard.db')}` : `${PG_BASE}?schema=${schema}`;
  const prefix = `bench-prune-${process.pid}-${schema.slice(-6)}`;
  const env = {
    ...process.env,
    TASKYARD_ENV: 'production',
    TASKYARD_ADMIN_KEY: ADMIN_KEY,
    DATABASE_URL: databaseUrl,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    PORT: '0',
    LOG_LEVEL: 'warn',
    // The load comes from one key at far more than the default per-key limit.
    RATE_LIMIT_PER_MINUTE: '0',
    BACKUP_DIR: path.join(dir, 'backups'),
  };
  const logger = createLogger({ level: 'warn', name: 'bench-prune' });
  const db = await createDatabase(databaseUrl);
  const redis = createRedis(REDIS_URL, 'client');
  const queues = createQueues(enabledQueues(loadConfig(env)), redis, prefix, logger);
  const children: ChildProcess[] = [];
  try {
    await migrateToLatest(db, await loadMigrations());
    const now = Date.now();
    if (backend === 'sqlite') seedSqlite(path.join(dir, 'taskyard.db'), ROWS, now - 1000);
    else await seedPostgres(databaseUrl, ROWS, now - 1000);
    // Only the run under test: no scheduled backup, prune or probe cycle in the window.
    for (const name of ['backup', 'pruning', 'probes']) {
      await storeSchedule(db.db, name, { every_ms: 3_600_000, enabled: false }, now);
    }
    const runId = randomUUID();
    await db.db
      .insertInto('pruning_runs')
      .values({ id: runId, trigger: 'manual', dry_run: 0, status: 'queued', created_at: now })
      .execute();
    // The api and the pruning worker are separate processes, as deployed; this process
    // only generates load, so its own event loop never stalls behind a delete.
    const api = await startProcess('api/server.ts', [], { ...env, LOG_LEVEL: 'info' }, 'api listening');
    children.push(api.child);
    const url = `http://127.0.0.1:${String(api.line.port)}`;
    const worker = await startProcess(
      'workers/main.ts',
      ['--queues', 'pruning'],
      { ...env, LOG_LEVEL: 'info' },
      'worker ready',
    );
    children.push(worker.child);

    await load(url, runId, 2); // warm up
    const without = await load(url, runId, BASELINE_S);

    const during = load(url, runId, undefined);
    await queues.add('pruning', 'prune', { run_id: runId, dry_run: false }, `prune-${runId}`);
    let row: { status: string; started_at: number | null; finished_at: number | null } | undefined;
    for (;;) {
      row = await db.db
        .selectFrom('pruning_runs')
        .select(['status', 'started_at', 'finished_at'])
        .where('id', '=', runId)
        .executeTakeFirst();
      if (row && row.status !== 'queued' && row.status !== 'running') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    (during as unknown as { stop(): void }).stop();
    const withPruning = await during;
    if (row.status !== 'succeeded') throw new Error(`the pruning run ended ${row.status}`);
    const seconds = (Number(row.finished_at) - Number(row.started_at)) / 1000;

    const left = await db.db
      .selectFrom('idempotency_keys')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    if (Number(left.n) !== 0) throw new Error(`${String(left.n)} rows left after pruning`);
    return {
      backend,
      rows: ROWS,
      seconds: Math.round(seconds * 100) / 100,
      rows_per_s: Math.round(ROWS / seconds),
      p99_ms_without: without.latency.p99,
      p99_ms_during: withPruning.latency.p99,
      p99_ratio: Math.round((withPruning.latency.p99 / Math.max(1, without.latency.p99)) * 100) / 100,
      requests_during: withPruning.requests.total,
    };
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(
      children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)),
    );
    await queues.close().catch(() => undefined);
    await deleteKeysWithPrefix(redis, prefix).catch(() => undefined);
    await redis.quit();
    if (backend === 'postgres') await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db.db);
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const wanted = process.argv.slice(2);
  const backends = (wanted.length > 0 ? wanted : ['sqlite', 'postgres']) as Array<'sqlite' | 'postgres'>;
  for (const b of backends) console.log(JSON.stringify(await benchPruning(b)));
}
