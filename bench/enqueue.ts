/**
 * Enqueue through the api: idempotent `POST /v1/backups` (a distinct Idempotency-Key per
 * request, body `{"label":"bench"}`, an admin key, which has the write scope) under autocannon
 * load, next to a bare Express 5 JSON echo server measured in the same run with the same
 * autocannon settings. The api and the echo server each run as their own process; autocannon
 * runs in this one, so the load generator never shares an event loop with the server it loads.
 * Each target gets a discarded warm-up, then the measured run.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import autocannon from 'autocannon';
import pg from 'pg';
import { createRedis, deleteKeysWithPrefix } from '../shared/redis';
import { makeTempDir, removeTempDir, spawnTracked, type Spawned } from './child-processes';
import type { Figure } from './results';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_BASE = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

export interface EnqueueOptions {
  /** autocannon connections. @defaultValue 10 */
  connections: number;
  /** Measured seconds per target. @defaultValue 10 */
  durationSec: number;
  /** Discarded warm-up seconds per target. @defaultValue 2 */
  warmupSec: number;
}

export interface LoadResult {
  /** 2xx responses per second over the measured run. */
  rps: number;
  p50: number;
  p99: number;
  total: number;
  /** Responses that were not 2xx, plus connection errors and timeouts. */
  failures: string;
  /** CPU time (user + system) the server process spent per 2xx response, in ms. */
  cpuMsPerRequest: number;
  /** The server process's CPU seconds per second of the run: 1 is one core kept busy. */
  cores: number;
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name, which may itself hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Poll `url` until it answers 200, the child dies, or the deadline passes. */
async function waitReady(url: string, proc: Spawned, what: string, deadlineMs = 30_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  let exited: number | string | undefined;
  void proc.exited.then((c) => (exited = c));
  for (;;) {
    if (exited !== undefined)
      throw new Error(`${what} exited (${exited}) before it was ready: ${proc.stderrTail()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > until)
      throw new Error(`${what} was not ready at ${url} within ${deadlineMs} ms: ${proc.stderrTail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The api as a separate process. LOG_LEVEL=warn keeps the per-request access log (info) out of
 * the measurement, which also silences the `api listening` line (info): so the port is picked
 * here and readiness is polled on /readyz (database, migrations and Redis ready).
 */
async function startApi(
  databaseUrl: string,
  prefix: string,
  adminKey: string,
  backupDir: string,
): Promise<{ url: string; proc: Spawned }> {
  const port = await freePort();
  const proc = spawnTracked(process.execPath, ['--import', 'tsx', 'api/server.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      TASKYARD_ENV: 'test',
      DATABASE_URL: databaseUrl,
      REDIS_URL,
      REDIS_PREFIX: prefix,
      LOG_LEVEL: 'warn',
      // The load comes from one key at far more than the default per-key limit.
      RATE_LIMIT_PER_MINUTE: '0',
      TASKYARD_ADMIN_KEY: adminKey,
      // Never the default ./data/backups of the working tree (no worker runs, but to be sure).
      BACKUP_DIR: backupDir,
    },
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${url}/readyz`, proc, 'api');
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return { url, proc };
}

/** A reference server script (echo or floor) that prints `{"msg":"<name> listening","port":N}`. */
async function startReference(
  name: 'echo' | 'floor',
  env: Record<string, string> = {},
): Promise<{ url: string; proc: Spawned }> {
  let resolvePort!: (p: number) => void;
  const port = new Promise<number>((r) => (resolvePort = r));
  const proc = spawnTracked(process.execPath, ['--import', 'tsx', `bench/${name}-server.ts`], {
    cwd: ROOT,
    env: { ...process.env, PORT: '0', ...env },
    onStdoutLine: (line) => {
      try {
        const msg = JSON.parse(line) as { msg?: string; port?: number };
        if (msg.msg === `${name} listening` && typeof msg.port === 'number') resolvePort(msg.port);
      } catch {
        // not a JSON line
      }
    },
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    const p = await Promise.race([
      port,
      proc.exited.then((c) =>
        Promise.reject(new Error(`${name} server exited (${c}): ${proc.stderrTail()}`)),
      ),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name} server did not start within 30 s`)), 30_000);
      }),
    ]);
    return { url: `http://127.0.0.1:${p}`, proc };
  } catch (err) {
    await proc.stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

async function load(
  pid: number,
  url: string,
  pathName: string,
  headers: Record<string, string>,
  durationSec: number,
  connections: number,
  perRequest?: () => Record<string, string>,
): Promise<LoadResult> {
  const body = JSON.stringify({ label: 'bench' });
  const base = { 'content-type': 'application/json', ...headers };
  const cpuBefore = cpuSeconds(pid);
  const result = await autocannon({
    url,
    connections,
    duration: durationSec,
    requests: [
      {
        method: 'POST',
        path: pathName,
        body,
        headers: base,
        ...(perRequest ? { setupRequest: (req) => ({ ...req, headers: { ...base, ...perRequest() } }) } : {}),
      },
    ],
  });
  const cpu = cpuSeconds(pid) - cpuBefore;
  const ok = result['2xx'];
  const bad = [
    result.non2xx > 0 ? `${result.non2xx} non-2xx (${JSON.stringify(result.statusCodeStats ?? {})})` : '',
    result.errors > 0 ? `${result.errors} connection errors` : '',
    result.timeouts > 0 ? `${result.timeouts} timeouts` : '',
  ].filter(Boolean);
  return {
    rps: ok / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    total: ok,
    failures: bad.join(', '),
    cpuMsPerRequest: ok > 0 ? (cpu * 1000) / ok : Number.NaN,
    cores: cpu / result.duration,
  };
}

/** Warm-up (discarded), then the measured run. */
async function measure(
  label: string,
  target: () => Promise<LoadResult>,
  warmup: () => Promise<LoadResult>,
): Promise<LoadResult> {
  await warmup();
  const r = await target();
  console.log(
    `  ${label}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, ${r.cpuMsPerRequest.toFixed(3)} CPU-ms/req, ${r.total} ok${r.failures ? `, ${r.failures}` : ''}`,
  );
  return r;
}

async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_BASE });
  await client.connect();
  try {
    await client.query(`drop schema if exists ${pg.escapeIdentifier(schema)} cascade`);
  } finally {
    await client.end();
  }
}

async function createSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_BASE });
  await client.connect();
  try {
    await client.query(`create schema ${pg.escapeIdentifier(schema)}`);
  } finally {
    await client.end();
  }
}

async function deleteRedisPrefix(prefix: string): Promise<void> {
  const redis = createRedis(REDIS_URL, 'client');
  try {
    await deleteKeysWithPrefix(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

/** One round of the floor server (bench/floor-server.ts) against `databaseUrl`, cleaned up afterwards. */
async function floorRound(
  databaseUrl: (dir: string) => string,
  label: string,
  opts: EnqueueOptions,
  env: Record<string, string> = {},
): Promise<LoadResult> {
  const dir = makeTempDir('floor');
  const prefix = `bench-floor-${process.pid}-${Date.now()}`;
  let floor: { url: string; proc: Spawned } | undefined;
  try {
    floor = await startReference('floor', {
      FLOOR_DATABASE_URL: databaseUrl(dir),
      REDIS_URL,
      REDIS_PREFIX: prefix,
      ...env,
    });
    const { url, proc } = floor;
    const pid = proc.child.pid!;
    return await measure(
      label,
      () => load(pid, url, '/enqueue', {}, opts.durationSec, opts.connections),
      () => load(pid, url, '/enqueue', {}, opts.warmupSec, opts.connections),
    );
  } finally {
    await floor?.proc.stop();
    await deleteRedisPrefix(prefix);
    removeTempDir(dir);
  }
}

/** One api round against `databaseUrl`, with its own Redis prefix, fully cleaned up afterwards. */
async function apiRound(
  databaseUrl: (dir: string) => string,
  label: string,
  opts: EnqueueOptions,
): Promise<LoadResult> {
  const dir = makeTempDir('enqueue');
  const prefix = `bench-enq-${process.pid}-${Date.now()}`;
  const adminKey = `bench-admin-${randomBytes(24).toString('hex')}`;
  let seq = 0;
  const keyHeader = () => ({ 'idempotency-key': `bench-${prefix}-${seq++}` });
  const auth = { authorization: `Bearer ${adminKey}` };
  let api: { url: string; proc: Spawned } | undefined;
  try {
    api = await startApi(databaseUrl(dir), prefix, adminKey, path.join(dir, 'backups'));
    const { url, proc } = api;
    const pid = proc.child.pid!;
    return await measure(
      label,
      () => load(pid, url, '/v1/backups', auth, opts.durationSec, opts.connections, keyHeader),
      () => load(pid, url, '/v1/backups', auth, opts.warmupSec, opts.connections, keyHeader),
    );
  } finally {
    await api?.proc.stop();
    await deleteRedisPrefix(prefix);
    removeTempDir(dir);
  }
}

export async function benchEnqueue(
  opts: EnqueueOptions = { connections: 10, durationSec: 10, warmupSec: 2 },
): Promise<{ figures: Figure[]; notes: string[] }> {
  // The echo is measured before and after the api rounds and the two runs averaged, so drift
  // on the shared machine during the api rounds shows up in the reference too.
  const echo = await startReference('echo');
  const echoRun = (label: string) =>
    measure(
      label,
      () => load(echo.proc.child.pid!, echo.url, '/echo', {}, opts.durationSec, opts.connections),
      () => load(echo.proc.child.pid!, echo.url, '/echo', {}, opts.warmupSec, opts.connections),
    );
  let echoBefore: LoadResult;
  let echoAfter: LoadResult;
  let sqlite: LoadResult;
  let postgres: LoadResult;
  let floorSqlite: LoadResult;
  let floorSqliteGrouped: LoadResult;
  let floorPostgres: LoadResult;
  try {
    echoBefore = await echoRun('express echo (before)');

    sqlite = await apiRound((dir) => `sqlite:${path.join(dir, 'taskyard.db')}`, 'api on SQLite', opts);

    const schema = `bench_enq_${process.pid}_${Date.now()}`;
    try {
      postgres = await apiRound(() => `${PG_BASE}?schema=${schema}`, 'api on Postgres', opts);
    } finally {
      await dropSchema(schema);
    }

    floorSqlite = await floorRound(
      (dir) => `sqlite:${path.join(dir, 'floor.db')}`,
      'floor (one FULL insert + add) on SQLite',
      opts,
    );
    floorSqliteGrouped = await floorRound(
      (dir) => `sqlite:${path.join(dir, 'floor.db')}`,
      'floor (group-committed FULL inserts + add) on SQLite',
      opts,
      { FLOOR_GROUP_COMMIT: '1' },
    );
    const floorSchema = `bench_floor_${process.pid}_${Date.now()}`;
    try {
      await createSchema(floorSchema);
      floorPostgres = await floorRound(() => PG_BASE, 'floor (one insert + add) on Postgres', opts, {
        FLOOR_TABLE: `${floorSchema}.floor_jobs`,
      });
    } finally {
      await dropSchema(floorSchema);
    }

    echoAfter = await echoRun('express echo (after)');
  } finally {
    await echo.proc.stop();
  }
  const echoResult: LoadResult = {
    rps: (echoBefore.rps + echoAfter.rps) / 2,
    p50: (echoBefore.p50 + echoAfter.p50) / 2,
    p99: (echoBefore.p99 + echoAfter.p99) / 2,
    total: echoBefore.total + echoAfter.total,
    cpuMsPerRequest: (echoBefore.cpuMsPerRequest + echoAfter.cpuMsPerRequest) / 2,
    cores: (echoBefore.cores + echoAfter.cores) / 2,
    failures: [echoBefore.failures, echoAfter.failures].filter(Boolean).join(', '),
  };

  const ref = (what: string, value: number) => ({ name: `express echo, ${what}`, value });
  const setting = `${opts.connections} connections, ${opts.durationSec} s after a ${opts.warmupSec} s warm-up`;
  const figures: Figure[] = [];
  for (const [db, r] of [
    ['SQLite', sqlite],
    ['Postgres', postgres],
  ] as const) {
    figures.push(
      {
        name: `POST /v1/backups, ${db} (${setting})`,
        value: r.rps,
        unit: 'req/s',
        reference: ref('same settings', echoResult.rps),
        targetRatio: 0.6,
      },
      {
        name: `POST /v1/backups, ${db}: p50 latency`,
        value: r.p50,
        unit: 'ms',
        reference: ref('p50', echoResult.p50),
      },
      {
        name: `POST /v1/backups, ${db}: p99 latency`,
        value: r.p99,
        unit: 'ms',
        reference: ref('p99', echoResult.p99),
      },
    );
  }
  for (const [what, floor, api] of [
    ['SQLite, a commit per request', floorSqlite, sqlite],
    ['SQLite, group commit', floorSqliteGrouped, sqlite],
    ['Postgres', floorPostgres, postgres],
  ] as const) {
    figures.push(
      {
        name: `floor: Express + one durable insert + BullMQ add, ${what} (${setting})`,
        value: floor.rps,
        unit: 'req/s',
        reference: ref('same settings', echoResult.rps),
      },
      {
        name: `POST /v1/backups against the floor, ${what}`,
        value: api.rps,
        unit: 'req/s',
        reference: { name: `floor, ${what}`, value: floor.rps },
      },
    );
  }
  for (const [what, r] of [
    ['POST /v1/backups, SQLite', sqlite],
    ['POST /v1/backups, Postgres (the api process only)', postgres],
    ['floor, SQLite, group commit', floorSqliteGrouped],
  ] as const) {
    figures.push({
      name: `server CPU per request: ${what}`,
      value: r.cpuMsPerRequest,
      unit: 'CPU-ms',
      reference: ref('CPU per request', echoResult.cpuMsPerRequest),
    });
  }
  // Node answers on one thread, so one core is the most a server process can spend per second.
  const budgetMs = 1000 / (0.6 * echoResult.rps);
  const failures = [
    ['echo', echoResult],
    ['SQLite', sqlite],
    ['Postgres', postgres],
    ['floor SQLite', floorSqlite],
    ['floor SQLite grouped', floorSqliteGrouped],
    ['floor Postgres', floorPostgres],
  ]
    .filter(([, r]) => (r as LoadResult).failures !== '')
    .map(([n, r]) => `${n as string}: ${(r as LoadResult).failures}`);
  const notes = [
    `Each request carries a distinct Idempotency-Key and an admin key (admin ⊃ write); every request is a full claim → one DB transaction (backup row, outbox row, idempotency record) → BullMQ add → 202. Only 2xx responses are counted (${sqlite.total.toLocaleString('en-US')} on SQLite, ${postgres.total.toLocaleString('en-US')} on Postgres, ${echoResult.total.toLocaleString('en-US')} echoes).`,
    failures.length === 0
      ? 'No non-2xx responses, connection errors or timeouts.'
      : `Failures: ${failures.join('; ')}.`,
    'The api runs as its own process (`node --import tsx api/server.ts`, TASKYARD_ENV=test, LOG_LEVEL=warn so the per-request access log is off, RATE_LIMIT_PER_MINUTE=0 since the load is one key far above the per-key limit, a fresh SQLite file or Postgres schema, its own Redis prefix); the echo server (`bench/echo-server.ts`) likewise. No worker runs, so enqueued jobs just wait in Redis.',
    `Echo reference = mean of a run before and one after the api rounds: ${echoBefore.rps.toFixed(0)} and ${echoAfter.rps.toFixed(0)} req/s (p99 ${echoBefore.p99} / ${echoAfter.p99} ms).`,
    `The floor rows (\`bench/floor-server.ts\`, no target) show the least any persist-then-enqueue design does per request: Express with its JSON parser, one INSERT (SQLite WAL with synchronous = FULL, committed per request or, like the api, group-committed per event-loop turn; Postgres as configured) and one BullMQ add, no auth, idempotency, outbox or validation (${floorSqlite.total.toLocaleString('en-US')}, ${floorSqliteGrouped.total.toLocaleString('en-US')} and ${floorPostgres.total.toLocaleString('en-US')} responses). The api does, per request: key lookup, idempotency claim, one transaction (backup row, outbox row, idempotency record; on SQLite shared by the requests of one event-loop turn, see docs/architecture.md), BullMQ add, outbox mark.`,
    `CPU per request is the server process's user + system time over the measured run (from /proc/<pid>/stat), divided by its 2xx responses; for Postgres it leaves out the server's own backends. Under this load each server process keeps about one core busy (CPU-s per s: api ${sqlite.cores.toFixed(2)} on SQLite and ${postgres.cores.toFixed(2)} on Postgres, echo ${echoResult.cores.toFixed(2)}, group-commit floor ${floorSqliteGrouped.cores.toFixed(2)}), and Node answers requests on one thread. The ≥ 0.6 target (${(0.6 * echoResult.rps).toFixed(0)} req/s in this run) therefore leaves the api at most ${budgetMs.toFixed(3)} CPU-ms per request; on SQLite it spends ${sqlite.cpuMsPerRequest.toFixed(3)}, the echo ${echoResult.cpuMsPerRequest.toFixed(3)} and the group-commit floor ${floorSqliteGrouped.cpuMsPerRequest.toFixed(3)}.`,
    `2-core machine: autocannon (in the bench process) takes most of one core, the server under test the other, and the api also shares the machine with Redis (and Postgres). These are same-machine, relative figures, not capacity numbers. Latency figures are informational (no target); their ratio is api / echo.`,
  ];
  return { figures, notes };
}
