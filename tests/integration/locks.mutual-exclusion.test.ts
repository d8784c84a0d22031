import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockBusyError } from '../../shared/errors';
import { createLocks, type Locks } from '../../shared/locks';
import { createLogger } from '../../shared/logger';
import { createRedis, deleteKeysWithPrefix, redisKeys } from '../../shared/redis';
import { startGate, testRedisUrl, uniquePrefix, waitFor } from '../helpers/services';

const prefix = uniquePrefix('locks-mutex');
const logger = createLogger({ level: 'silent' });
const connections: Redis[] = [];

/** A separate connection and Locks instance: what one worker process would have. */
function makeProcess(name: string): { redis: Redis; locks: Locks } {
  const redis = createRedis(testRedisUrl(), 'client', { connectionName: `${prefix}-${name}` });
  connections.push(redis);
  return { redis, locks: createLocks({ redis, prefix, logger }) };
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

let processes: Array<{ redis: Redis; locks: Locks }>;
let admin: Redis;

beforeAll(() => {
  processes = ['p1', 'p2', 'p3', 'p4'].map(makeProcess);
  admin = makeProcess('admin').redis;
});

afterAll(async () => {
  await deleteKeysWithPrefix(admin, prefix);
  await Promise.all(connections.map((c) => c.quit()));
});

function proc(i: number): { redis: Redis; locks: Locks } {
  const p = processes[i % processes.length];
  if (!p) throw new Error('no process');
  return p;
}

describe('withSingleRunner mutual exclusion', () => {
  it('runs 50 concurrent callers over 4 connections one at a time, with strictly increasing fences', async () => {
    const scope = 'hammer';
    const gate = startGate();
    let active = 0;
    let maxActive = 0;
    let ran = 0;
    const fences: number[] = [];

    const calls = Array.from({ length: 50 }, async (_, i) => {
      const { locks, redis } = proc(i);
      await gate.wait();
      return locks.withSingleRunner(
        scope,
        async (ctx) => {
          active += 1;
          maxActive = Math.max(maxActive, active);
          fences.push(ctx.fence);
          for (let n = 0; n < 3; n += 1) await yieldToLoop();
          await redis.ping();
          active -= 1;
          ran += 1;
          return ctx.fence;
        },
        { wait: true, waitMs: 60_000 },
      );
    });
    gate.open();
    const returned = await Promise.all(calls);

    expect(maxActive).toBe(1);
    expect(ran).toBe(50);
    expect(fences).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(new Set(returned).size).toBe(50);
    expect(await proc(0).locks.currentFence(scope)).toBe(50);
    expect(await admin.exists(redisKeys.lock(prefix, scope))).toBe(0);
  });

  it('a caller that does not wait gets LockBusyError at once while the scope is held', async () => {
    const scope = 'busy-no-wait';
    const release = startGate();
    const entered = startGate();
    const holder = proc(0).locks.withSingleRunner(scope, async (ctx) => {
      entered.open();
      await release.wait();
      return ctx.fence;
    });
    await entered.wait();

    let contenderRan = false;
    const error = await proc(1)
      .locks.withSingleRunner(scope, async () => {
        contenderRan = true;
      })
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(LockBusyError);
    expect((error as LockBusyError).scope).toBe(scope);
    expect(contenderRan).toBe(false);
    // A refused caller takes no fencing token.
    expect(await proc(1).locks.currentFence(scope)).toBe(1);

    release.open();
    expect(await holder).toBe(1);
  });

  it('a waiting caller runs after the holder releases, with the next fence', async () => {
    const scope = 'busy-wait';
    const release = startGate();
    const entered = startGate();
    const order: string[] = [];
    const holder = proc(0).locks.withSingleRunner(scope, async (ctx) => {
      order.push('holder-start');
      entered.open();
      await release.wait();
      order.push('holder-end');
      return ctx.fence;
    });
    await entered.wait();

    // A fresh connection, so its last command can only be this waiter's acquire attempt.
    const fresh = makeProcess('waiter');
    const waiter = fresh.locks.withSingleRunner(
      scope,
      async (ctx) => {
        order.push('waiter-start');
        return ctx.fence;
      },
      { wait: true, waitMs: 20_000 },
    );
    // The waiter's connection has sent an acquire attempt (a Lua script) while the holder holds.
    const waiterName = `${prefix}-waiter`;
    await waitFor(
      async () => {
        const list = (await admin.client('LIST')) as string;
        const line = list.split('\n').find((l) => l.includes(` name=${waiterName} `));
        return line !== undefined && / cmd=eval/.test(line);
      },
      { what: 'the waiter to try the busy lock' },
    );
    expect(order).toEqual(['holder-start']);

    release.open();
    expect(await holder).toBe(1);
    expect(await waiter).toBe(2);
    expect(order).toEqual(['holder-start', 'holder-end', 'waiter-start']);
  });

  it('a waiting caller gets LockBusyError when waitMs passes first', async () => {
    const scope = 'wait-times-out';
    const release = startGate();
    const entered = startGate();
    const holder = proc(0).locks.withSingleRunner(scope, async () => {
      entered.open();
      await release.wait();
    });
    await entered.wait();

    const started = Date.now();
    const error = await proc(1)
      .locks.withSingleRunner(scope, async () => 'ran', { wait: true, waitMs: 300 })
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(LockBusyError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);

    release.open();
    await holder;
  });

  it('an external signal cancels a wait for the lock with its reason', async () => {
    const scope = 'wait-cancelled';
    const release = startGate();
    const entered = startGate();
    const holder = proc(0).locks.withSingleRunner(scope, async () => {
      entered.open();
      await release.wait();
    });
    await entered.wait();

    const controller = new AbortController();
    const reason = new Error('job cancelled');
    const waiter = proc(1)
      .locks.withSingleRunner(scope, async () => 'ran', {
        wait: true,
        waitMs: 20_000,
        signal: controller.signal,
      })
      .catch((err: unknown) => err);
    controller.abort(reason);
    expect(await waiter).toBe(reason);

    release.open();
    await holder;
    expect(await proc(0).locks.currentFence(scope)).toBe(1);
  });

  it('an error thrown by fn is passed through and the lock is released', async () => {
    const scope = 'fn-throws';
    const boom = new Error('boom');
    await expect(
      proc(0).locks.withSingleRunner(scope, async () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await admin.exists(redisKeys.lock(prefix, scope))).toBe(0);
    expect(await proc(1).locks.withSingleRunner(scope, async (ctx) => ctx.fence)).toBe(2);
  });

  it('an invalid scope name is refused before anything touches Redis', async () => {
    for (const scope of ['', 'has space', 'x'.repeat(201), 'a/b', 'ünïcode']) {
      await expect(proc(0).locks.withSingleRunner(scope, async () => 'ran')).rejects.toThrow(
        /invalid lock scope/,
      );
      await expect(proc(0).locks.currentFence(scope)).rejects.toThrow(/invalid lock scope/);
    }
    expect(await proc(0).locks.currentFence('simulation:run-1.a_b-c')).toBe(0);
  });
});
