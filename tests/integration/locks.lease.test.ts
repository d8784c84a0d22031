import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockBusyError, LockLostError } from '../../shared/errors';
import { createLocks, type Locks } from '../../shared/locks';
import { createLogger } from '../../shared/logger';
import { createRedis, deleteKeysWithPrefix, redisKeys } from '../../shared/redis';
import { startGate, testRedisUrl, uniquePrefix, waitFor } from '../helpers/services';

const prefix = uniquePrefix('locks-lease');
const TTL_MS = 500;
const logLines: Array<Record<string, unknown>> = [];
const logger = createLogger(
  { level: 'debug' },
  { write: (line: string) => void logLines.push(JSON.parse(line)) },
);

let holderRedis: Redis;
let contenderRedis: Redis;
let admin: Redis;
let holder: Locks;
let contender: Locks;

beforeAll(() => {
  holderRedis = createRedis(testRedisUrl(), 'client');
  contenderRedis = createRedis(testRedisUrl(), 'client');
  admin = createRedis(testRedisUrl(), 'client');
  holder = createLocks({ redis: holderRedis, prefix, logger, ttlMs: TTL_MS });
  contender = createLocks({ redis: contenderRedis, prefix, logger, ttlMs: TTL_MS });
});

afterAll(async () => {
  await deleteKeysWithPrefix(admin, prefix);
  await Promise.all([holderRedis.quit(), contenderRedis.quit(), admin.quit()]);
});

const aborted = (signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });

describe('withSingleRunner lease', () => {
  it('keeps the lock across many TTLs while fn runs, refusing every contender', async () => {
    const scope = 'long-run';
    const key = redisKeys.lock(prefix, scope);
    const release = startGate();
    const entered = startGate();
    let signal: AbortSignal | undefined;
    const run = holder.withSingleRunner(scope, async (ctx) => {
      signal = ctx.signal;
      entered.open();
      await release.wait();
      return ctx.fence;
    });
    await entered.wait();
    const lockValue = await admin.get(key);

    const started = Date.now();
    const outcomes: unknown[] = [];
    await waitFor(
      async () => {
        outcomes.push(
          await contender.withSingleRunner(scope, async () => 'ran').catch((err: unknown) => err),
        );
        return Date.now() - started >= 4 * TTL_MS;
      },
      { timeoutMs: 10_000, intervalMs: 50, what: 'four TTLs to pass' },
    );

    expect(outcomes.length).toBeGreaterThanOrEqual(5);
    expect(outcomes.filter((o) => !(o instanceof LockBusyError))).toEqual([]);
    expect(signal?.aborted).toBe(false);
    // Still the same holder, with a lease renewed within the last TTL.
    expect(await admin.get(key)).toBe(lockValue);
    const pttl = await admin.pttl(key);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(TTL_MS);

    release.open();
    expect(await run).toBe(1);
    expect(await admin.exists(key)).toBe(0);
    // The lock's random value is a capability: it never reaches the logs.
    expect(JSON.stringify(logLines)).not.toContain(lockValue);
  });

  it('a deleted lock key aborts ctx.signal with LockLostError, and the run rejects even though fn resolves', async () => {
    const scope = 'deleted-key';
    const entered = startGate();
    let reason: unknown;
    const run = holder.withSingleRunner(scope, async (ctx) => {
      entered.open();
      await aborted(ctx.signal);
      reason = ctx.signal.reason;
      return 'finished anyway';
    });
    await entered.wait();

    await admin.del(redisKeys.lock(prefix, scope));
    // Another runner takes the scope at once; the stale holder learns it at its next extension.
    const next = await contender.withSingleRunner(scope, async (ctx) => ctx.fence, {
      wait: true,
      waitMs: 5_000,
    });
    expect(next).toBe(2);

    const error = await run.catch((err: unknown) => err);
    expect(error).toBeInstanceOf(LockLostError);
    expect((error as LockLostError).scope).toBe(scope);
    expect(reason).toBe(error);

    const mine = logLines.filter((l) => l.scope === scope);
    expect(mine.filter((l) => l.msg === 'lock acquired').map((l) => [l.level, l.fence])).toEqual([
      [30, 1],
      [30, 2],
    ]);
    expect(mine.filter((l) => l.msg === 'lock lost').map((l) => [l.level, l.fence])).toEqual([[40, 1]]);
    // Only the contender, which still held its lock, logs a release at info.
    expect(mine.filter((l) => l.msg === 'lock released').map((l) => [l.level, l.fence])).toEqual([[30, 2]]);
  });

  it("logLevel 'debug' moves a routine tick's acquire and release lines to debug", async () => {
    const scope = 'routine-tick';
    await holder.withSingleRunner(scope, async () => undefined, { logLevel: 'debug' });
    const mine = logLines.filter((l) => l.scope === scope);
    expect(mine.map((l) => [l.msg, l.level])).toEqual([
      ['lock acquired', 20],
      ['lock released', 20],
    ]);
  });

  it('a lock that expires while the event loop is blocked is lost, even when fn then returns', async () => {
    const scope = 'blocked-loop';
    let reason: unknown;
    const run = holder.withSingleRunner(scope, async (ctx) => {
      // Block the event loop past the TTL, so no extension can run.
      const until = Date.now() + TTL_MS + 200;
      while (Date.now() < until) Math.sqrt(Math.random());
      reason = ctx.signal.reason;
      return 'finished anyway';
    });
    const error = await run.catch((err: unknown) => err);
    expect(error).toBeInstanceOf(LockLostError);
    expect(reason).toBeUndefined();
  });

  it('a lock that expires while extension is blocked aborts a fn that is still waiting', async () => {
    const scope = 'blocked-then-wait';
    let reason: unknown;
    const run = holder.withSingleRunner(scope, async (ctx) => {
      const until = Date.now() + TTL_MS + 200;
      while (Date.now() < until) Math.sqrt(Math.random());
      await aborted(ctx.signal);
      reason = ctx.signal.reason;
      return 'finished anyway';
    });
    const error = await run.catch((err: unknown) => err);
    expect(error).toBeInstanceOf(LockLostError);
    expect(reason).toBe(error);
  });

  it('an external signal aborts ctx.signal with its own reason and the lock is released', async () => {
    const scope = 'external-abort';
    const controller = new AbortController();
    const entered = startGate();
    const cancel = new Error('job cancelled');
    const run = holder.withSingleRunner(
      scope,
      async (ctx) => {
        entered.open();
        await aborted(ctx.signal);
        throw ctx.signal.reason;
      },
      { signal: controller.signal },
    );
    await entered.wait();
    controller.abort(cancel);
    await expect(run).rejects.toBe(cancel);
    expect(await admin.exists(redisKeys.lock(prefix, scope))).toBe(0);
  });

  it('an already aborted external signal stops the call before it takes the lock', async () => {
    const scope = 'pre-aborted';
    const controller = new AbortController();
    const cancel = new Error('shutting down');
    controller.abort(cancel);
    await expect(
      holder.withSingleRunner(scope, async () => 'ran', { signal: controller.signal }),
    ).rejects.toBe(cancel);
    expect(await holder.currentFence(scope)).toBe(0);
  });
});
