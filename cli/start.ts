/**
 * `npm start`: the embedded default in one terminal. Migrates, makes sure Redis answers
 * (starting a private redis-server when nothing does), then runs and supervises the api
 * and one worker for all queues. A child that dies is restarted with backoff; Ctrl-C
 * drains everything; a second Ctrl-C stops at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { EXIT_CONFIG, loadConfig, type Config } from '../shared/config';
import { ConfigError, toError } from '../shared/errors';
import { createLogger, redactUrl } from '../shared/logger';
import { handleShutdownSignals } from '../shared/signals';
import { createDatabase } from '../shared/db/database';
import { migrateToLatest } from '../shared/db/migrate';
import { countActiveAdminKeys, ensureAdminKey, generateApiKey } from '../shared/db/api-keys';
import { loadMigrations } from '../migrations/index';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Exit codes after which restarting cannot help (bad config, bad usage). */
const FATAL_EXIT_CODES = new Set([EXIT_CONFIG, 64]);
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** A child that ran this long is considered healthy again: its backoff resets. */
const STABLE_AFTER_MS = 60_000;

const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'info', name: 'supervisor' });

function fail(message: string, code: number): never {
  process.stderr.write(`\ntaskyard: ${message}\n\n`);
  process.exit(code);
}

async function redisAnswers(url: string): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    connectTimeout: 1_000,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.ping();
    return true;
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function onPath(binary: string): boolean {
  return (process.env.PATH ?? '')
    .split(path.delimiter)
    .some((dir) => dir && fs.existsSync(path.join(dir, binary)));
}

async function pollUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return false;
}

/** Start a private redis-server whose data lives under ./data/redis (AOF), so queued jobs survive a restart. */
async function startPrivateRedis(dataDir: string): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const dir = path.resolve(dataDir, 'redis');
  fs.mkdirSync(dir, { recursive: true });
  const proc = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      'yes',
      '--loglevel',
      'warning',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], detached: true },
  );
  const url = `redis://127.0.0.1:${port}`;
  if (!(await pollUntil(() => redisAnswers(url), 10_000))) {
    proc.kill('SIGKILL');
    fail(`started redis-server on port ${port}, but it did not answer within 10 s`, 69);
  }
  return { url, proc };
}

interface Supervised {
  name: string;
  args: string[];
  proc?: ChildProcess;
  startedAt: number;
  failures: number;
  exited?: Promise<void>;
  /** Where the api listens, as it reported over IPC once listening (api only). */
  url?: string;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }

  const env: NodeJS.ProcessEnv = { ...process.env };

  // 1. Redis: the configured one, or a private one.
  let privateRedis: ChildProcess | undefined;
  if (!(await redisAnswers(config.REDIS_URL))) {
    if (!onPath('redis-server')) {
      fail(
        `nothing answers at REDIS_URL (${redactUrl(config.REDIS_URL)}) and redis-server is not on PATH.\n` +
          `Start Redis (e.g. \`redis-server --daemonize yes\`, or \`docker compose up -d redis\`), ` +
          `or set REDIS_URL to a Redis that is running.`,
        69,
      );
    }
    const started = await startPrivateRedis(path.dirname(dbFilePath(config.DATABASE_URL) ?? './data/x'));
    privateRedis = started.proc;
    env.REDIS_URL = started.url;
    logger.info(
      { redis: started.url },
      `nothing answered at ${redactUrl(config.REDIS_URL)}: started a private redis-server`,
    );
    process.stderr.write(
      `taskyard: no Redis at ${redactUrl(config.REDIS_URL)}; started a private redis-server at ${started.url}\n`,
    );
  }

  // 2. Migrate, and in development make sure an admin key exists.
  const handle = await createDatabase(config.DATABASE_URL);
  let adminKey: string | undefined;
  let noAdminKey = false;
  try {
    const applied = await migrateToLatest(handle, await loadMigrations(), logger);
    logger.info(
      { applied, database: handle.displayUrl },
      applied.length ? 'migrations applied' : 'database up to date',
    );
    const now = Date.now();
    if (config.TASKYARD_ADMIN_KEY) {
      await ensureAdminKey(handle.db, config.TASKYARD_ADMIN_KEY, now);
    } else if ((await countActiveAdminKeys(handle.db)) === 0) {
      if (config.TASKYARD_ENV === 'development') {
        adminKey = generateApiKey();
        await ensureAdminKey(handle.db, adminKey, now);
      } else {
        noAdminKey = true;
      }
    }
  } finally {
    await handle.close();
  }

  // The key is stored hashed only, and no second one is made while it exists: it must be
  // shown whatever happens next (ready, not ready, or a child that cannot start).
  const adminKeyLine = (key: string) => `  admin key (shown once, stored hashed; keep it): ${key}`;
  const showAdminKey = () => {
    if (!adminKey) return;
    process.stdout.write(`\n${adminKeyLine(adminKey)}\n\n`);
    adminKey = undefined;
  };

  // 3. Children. Each runs in its own process group, so a terminal Ctrl-C reaches only
  // this supervisor, which forwards exactly one SIGTERM (a second would mean "exit now").
  let stopping = false;
  const children: Supervised[] = [
    { name: 'api', args: ['--import', 'tsx', path.join(ROOT, 'api/server.ts')], startedAt: 0, failures: 0 },
    {
      name: 'worker',
      args: ['--import', 'tsx', path.join(ROOT, 'workers/main.ts')],
      startedAt: 0,
      failures: 0,
    },
  ];
  let fatal: { name: string; code: number } | undefined;

  const launch = (child: Supervised) => {
    child.startedAt = performance.now();
    const proc = spawn(process.execPath, child.args, {
      env,
      cwd: ROOT,
      // The api reports its address over IPC; the worker needs no channel.
      stdio:
        child.name === 'api' ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'inherit', 'inherit'],
      detached: true,
    });
    child.proc = proc;
    child.url = undefined;
    proc.on('message', (m: unknown) => {
      const msg = m as { type?: unknown; url?: unknown } | null;
      if (msg?.type === 'api-listening' && typeof msg.url === 'string') child.url = msg.url;
    });
    child.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        resolve();
        if (stopping) return;
        if (code !== null && FATAL_EXIT_CODES.has(code)) {
          fatal = { name: child.name, code };
          logger.error({ child: child.name, code }, `${child.name} exited with ${code}; not restarting`);
          void shutdown().then((c) => process.exit(c));
          return;
        }
        const ranMs = performance.now() - child.startedAt;
        child.failures = ranMs > STABLE_AFTER_MS ? 1 : child.failures + 1;
        const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (child.failures - 1));
        logger.warn(
          { child: child.name, code, signal, restart_in_ms: delay, restarts: child.failures },
          `${child.name} exited unexpectedly; restarting with backoff`,
        );
        // A supervisor backoff, not a work timer: nothing is scheduled by it but a respawn.
        const timer = setTimeout(() => {
          if (!stopping) launch(child);
        }, delay);
        timer.unref();
      });
    });
    logger.info({ child: child.name, child_pid: proc.pid }, `${child.name} started`);
  };

  const shutdown = async (): Promise<number> => {
    if (stopping) return 0;
    stopping = true;
    const graceMs = config.DRAIN_TIMEOUT_MS + 10_000;
    let code = fatal?.code ?? 0;
    await Promise.all(
      children.map(async (c) => {
        const proc = c.proc;
        if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
        proc.kill('SIGTERM');
        const killer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        await c.exited;
        clearTimeout(killer);
        // A child still starting has no handler yet and dies of the SIGTERM itself: a clean stop too.
        const clean = proc.exitCode === 0 || proc.signalCode === 'SIGTERM';
        if (!clean && code === 0) code = 1;
      }),
    );
    if (privateRedis && privateRedis.exitCode === null) {
      const exited = new Promise((r) => privateRedis!.once('exit', r));
      privateRedis.kill('SIGTERM');
      await exited;
    }
    showAdminKey();
    logger.info({ code }, 'taskyard stopped');
    return code;
  };

  handleShutdownSignals({
    logger,
    onFirst: shutdown,
    exit: (code) => {
      for (const c of children) if (c.proc && c.proc.exitCode === null) c.proc.kill('SIGKILL');
      // Not SIGKILL: Redis flushes its append-only file on SIGTERM and exits by itself. Left
      // running, the next start would start a second one on the same data directory.
      if (privateRedis && privateRedis.exitCode === null) privateRedis.kill('SIGTERM');
      showAdminKey();
      return process.exit(code);
    },
  });

  for (const c of children) launch(c);

  // 4. Ready: say where, once. Only our own api's address counts: it reports it when listening.
  const api = children[0]!;
  const ready = await pollUntil(
    async () => {
      if (stopping) return true;
      if (!api.url || api.proc?.exitCode !== null) return false;
      try {
        const res = await fetch(`${api.url}/readyz`, { signal: AbortSignal.timeout(1_000) });
        return res.status === 200;
      } catch {
        return false;
      }
    },
    60_000,
    200,
  );
  if (stopping) return;
  const base =
    api.url ?? `http://${config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST}:${config.PORT}`;
  if (!ready) {
    logger.warn({ url: `${base}/readyz` }, 'the api is not ready after 60 s; see the log above');
    showAdminKey();
    return;
  }
  const lines = [
    '',
    `taskyard is ready at ${base}`,
    `  Bull Board: ${base}/admin/queues (user: anything, password: an admin key)`,
    `  database:   ${redactUrl(config.DATABASE_URL)}`,
    `  redis:      ${redactUrl(env.REDIS_URL ?? config.REDIS_URL)}`,
  ];
  if (adminKey) {
    lines.push(adminKeyLine(adminKey));
    adminKey = undefined;
  } else if (noAdminKey) {
    lines.push(`  admin key:  none exists yet; ${MAKE_KEY_HINT}`);
  } else {
    lines.push(
      `  admin key:  ${config.TASKYARD_ADMIN_KEY ? "TASKYARD_ADMIN_KEY's, unless it was revoked; " : ''}${LOST_KEY_HINT}`,
    );
  }
  lines.push('  Ctrl-C stops everything (a second Ctrl-C stops at once).', '');
  process.stdout.write(lines.join('\n') + '\n');
}

/** Keys are stored hashed: a lost one cannot be shown again, only replaced. */
const MAKE_KEY_HINT = 'to make one: npm run taskyard -- keys create --name <you> --scopes admin';
const LOST_KEY_HINT = `keys are stored hashed and never shown again; ${MAKE_KEY_HINT}`;

function dbFilePath(url: string): string | undefined {
  const m = /^sqlite:(.+)$/.exec(url);
  return m && m[1] !== ':memory:' ? m[1] : undefined;
}

main().catch((err: unknown) => {
  logger.error({ err: toError(err) }, 'taskyard failed to start');
  process.exit(1);
});
