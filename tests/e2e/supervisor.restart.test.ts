import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import { assertNoLeakedChildren, spawnProcess, spawnTsx } from '../helpers/processes';
import { testRedisUrl, testSqliteUrl, uniquePrefix, waitFor } from '../helpers/services';

/** `npm start` (cli/start.ts): migrate, api + worker, supervision, clean Ctrl-C. */

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

afterEach(async () => {
  await assertNoLeakedChildren();
});

describe('npm start supervisor', () => {
  it('restarts a worker that dies, logs the restart, and stops everything on SIGINT', async () => {
    const prefix = uniquePrefix('supervisor');
    const port = await freePort();
    const sup = spawnTsx('supervisor', 'cli/start.ts', [], {
      ...process.env,
      TASKYARD_ENV: 'development',
      PORT: String(port),
      DATABASE_URL: testSqliteUrl('supervisor'),
      REDIS_URL: testRedisUrl(),
      REDIS_PREFIX: prefix,
      LOG_LEVEL: 'info',
    });
    try {
      const readyBanner = () => sup.text().includes(`taskyard is ready at http://127.0.0.1:${port}`);
      const started = await sup.waitForLog((l) => l.msg === 'worker started', {
        what: 'worker started',
        timeoutMs: 30_000,
      });
      // The worker's own log lines come through the supervisor's stdout.
      await sup.waitForLog((l) => l.msg === 'worker ready', { what: 'worker ready', timeoutMs: 30_000 });
      await waitFor(readyBanner, { what: 'the ready banner', timeoutMs: 30_000 });
      // Development with no admin key yet: one is made and shown once.
      expect(sup.text().match(/admin key \(shown once[^:]*\): ty_[A-Za-z0-9_-]+/g)).toHaveLength(1);

      process.kill(Number(started.child_pid), 'SIGKILL');
      const restart = await sup.waitForLog(
        (l) => l.msg === 'worker exited unexpectedly; restarting with backoff',
        {
          what: 'restart logged',
        },
      );
      expect(restart).toMatchObject({ child: 'worker', signal: 'SIGKILL', restarts: 1 });
      expect(Number(restart.restart_in_ms)).toBeGreaterThan(0);
      const again = await sup.waitForLog(
        (l) => l.msg === 'worker started' && l.child_pid !== started.child_pid,
        { what: 'worker started again', timeoutMs: 30_000 },
      );
      expect(again.child_pid).not.toBe(started.child_pid);
      await sup.waitForLog((l) => l.msg === 'worker ready' && l.pid === again.child_pid, {
        what: 'restarted worker ready',
        timeoutMs: 30_000,
      });

      sup.signal('SIGINT');
      expect(await sup.waitForExit(45_000)).toEqual({ code: 0, signal: null });
      expect(sup.logs.some((l) => l.msg === 'taskyard stopped')).toBe(true);
      // The children are gone too.
      for (const pid of [Number(again.child_pid)]) {
        expect(() => process.kill(pid, 0)).toThrow();
      }
    } finally {
      await sup.kill();
      const redis = createRedis(testRedisUrl(), 'client');
      await deleteKeysWithPrefix(redis, prefix);
      await redis.quit();
    }
  });

  it('a port another server answers on is never taken for ours: exit 78, no ready banner, the new admin key still shown', async () => {
    const prefix = uniquePrefix('supervisor_busy');
    const other = net.createServer((socket) =>
      socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'),
    );
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const { port } = other.address() as net.AddressInfo;
    const sup = spawnTsx('supervisor', 'cli/start.ts', [], {
      ...process.env,
      TASKYARD_ENV: 'development',
      PORT: String(port),
      DATABASE_URL: testSqliteUrl('supervisor_busy'),
      REDIS_URL: testRedisUrl(),
      REDIS_PREFIX: prefix,
      LOG_LEVEL: 'info',
    });
    try {
      expect(await sup.waitForExit(45_000)).toEqual({ code: 78, signal: null });
      expect(sup.text()).toContain('EADDRINUSE');
      expect(sup.text()).not.toContain('taskyard is ready');
      // Stored hashed and never made again while it exists: it must not be lost with the start.
      expect(sup.text().match(/admin key \(shown once[^:]*\): ty_[A-Za-z0-9_-]+/g)).toHaveLength(1);
    } finally {
      await sup.kill();
      await new Promise((resolve) => other.close(resolve));
      const redis = createRedis(testRedisUrl(), 'client');
      await deleteKeysWithPrefix(redis, prefix);
      await redis.quit();
    }
  });

  it('PORT=0: the banner names the port the api really took', async () => {
    const prefix = uniquePrefix('supervisor_port0');
    const sup = spawnTsx('supervisor', 'cli/start.ts', [], {
      ...process.env,
      TASKYARD_ENV: 'test',
      PORT: '0',
      DATABASE_URL: testSqliteUrl('supervisor_port0'),
      REDIS_URL: testRedisUrl(),
      REDIS_PREFIX: prefix,
      LOG_LEVEL: 'info',
    });
    try {
      const listening = await sup.waitForLog((l) => l.msg === 'api listening', {
        what: 'api listening',
        timeoutMs: 30_000,
      });
      expect(Number(listening.port)).toBeGreaterThan(0);
      await waitFor(
        () => sup.text().includes(`taskyard is ready at http://127.0.0.1:${Number(listening.port)}`),
        {
          what: 'the ready banner with the real port',
          timeoutMs: 30_000,
        },
      );
      sup.signal('SIGINT');
      expect(await sup.waitForExit(45_000)).toEqual({ code: 0, signal: null });
    } finally {
      await sup.kill();
      const redis = createRedis(testRedisUrl(), 'client');
      await deleteKeysWithPrefix(redis, prefix);
      await redis.quit();
    }
  });

  it('SIGTERM to the npm process of `npm start` reaches taskyard: it drains and stops, nothing is left running', async () => {
    const prefix = uniquePrefix('supervisor_npm');
    // npm runs a script through `sh -c`; a shell that does not pass SIGTERM on would leave the
    // node processes running without npm (as under a process manager that signals npm).
    const npm = spawnProcess('npm start', 'npm', ['start', '--silent'], {
      env: {
        ...process.env,
        TASKYARD_ENV: 'test',
        PORT: '0',
        DATABASE_URL: testSqliteUrl('supervisor_npm'),
        REDIS_URL: testRedisUrl(),
        REDIS_PREFIX: prefix,
        LOG_LEVEL: 'info',
      },
    });
    const pids: number[] = [];
    try {
      const started = await npm.waitForLog((l) => l.msg === 'worker started', {
        what: 'worker started',
        timeoutMs: 30_000,
      });
      const listening = await npm.waitForLog((l) => l.msg === 'api listening', {
        what: 'api listening',
        timeoutMs: 30_000,
      });
      await npm.waitForLog((l) => l.msg === 'worker ready', { what: 'worker ready', timeoutMs: 30_000 });
      pids.push(Number(started.pid), Number(started.child_pid), Number(listening.pid));
      expect(new Set(pids).size).toBe(3);

      npm.signal('SIGTERM');
      expect(await npm.waitForExit(45_000)).toEqual({ code: 0, signal: null });
      expect(npm.logs.some((l) => l.msg === 'worker stopped: all active jobs drained')).toBe(true);
      expect(npm.logs.some((l) => l.msg === 'taskyard stopped')).toBe(true);
      const alive = (pid: number) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      expect(pids.filter(alive)).toEqual([]);
    } finally {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await npm.kill();
      const redis = createRedis(testRedisUrl(), 'client');
      await deleteKeysWithPrefix(redis, prefix);
      await redis.quit();
    }
  });
});
