import { setTimeout as delay } from 'node:timers/promises';
import { Redlock, ExecutionError, ResourceLockedError, type Lock } from '@sesamecare-oss/redlock';
import type { Redis } from 'ioredis';
import { DependencyUnavailableError, LockBusyError, LockLostError, StaleFenceError, toError } from './errors';
import type { Logger } from './logger';
import { redisKeys } from './redis';

/**
 * Single-runner locks with fencing tokens (DESIGN.md §4.3).
 *
 * A scope is held through a Redlock lock on `<prefix>:lock:<scope>` that is extended while
 * the work runs; every acquisition takes a fencing token (`INCR <prefix>:fence:<scope>`)
 * that durable writes are conditional on (`fence <= token`), so a holder that lost its lock
 * without noticing changes nothing.
 *
 * Why not Redlock's `using()`: after a failed extension it retries at once, in a loop, until
 * the lock's local expiry (a stream of round-trips), it cannot be cancelled while waiting
 * for a busy scope, and a failing release in its `finally` replaces the routine's result.
 * Here a definite loss (the key holds another value or is gone) aborts at once, only a
 * transient failure is retried, and release errors are logged, never thrown.
 */

export interface LockOptions {
  /**
   * false: throw `LockBusyError` at once when the scope is held. true: retry until acquired
   * or `waitMs` passes, then `LockBusyError`.
   * @defaultValue false
   */
  wait?: boolean;
  /** How long `wait: true` keeps trying. @defaultValue 30_000 */
  waitMs?: number;
  /**
   * Level of the "lock acquired" / "lock released" lines: `debug` for routine ticks that take
   * their scope every few seconds (the outbox relay), so they do not flood the info log.
   * @defaultValue 'info'
   */
  logLevel?: 'info' | 'debug';
}

export interface SingleRunnerContext {
  /** Aborts with a `LockLostError` when the lock is lost, or with the external signal's reason. */
  signal: AbortSignal;
  /** The fencing token of this acquisition; strictly greater than every earlier one of the scope. */
  fence: number;
  scope: string;
  /**
   * Redis keeps fencing counters, and Redis can lose its data (DESIGN.md §1: it is
   * rebuildable). A holder that finds a durable row fenced at or above its own token while
   * it holds the lock therefore knows the counter was reset: this raises the counter above
   * `stored`, takes a fresh token, sets `fence` to it and returns it. Only ever call it
   * while holding the lock; a stale holder's older token stays below the new one.
   * @throws StaleFenceError when the counter is past `stored` (a newer holder took a token).
   */
  advanceFencePast(stored: number): Promise<number>;
}

/**
 * Delete fencing counters whose scope nobody holds. KEYS: fence, lock pairs (same node).
 * Deletes each fence whose lock key is absent; returns how many were deleted.
 */
const FORGET_FENCES_LUA = `
local deleted = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
return deleted
`;

/**
 * Raise a fencing counter past a stored fence, only when the counter is behind it.
 * KEYS[1]: the fence counter. ARGV[1]: the fence found in the database (integer).
 * ARGV[2]: the caller's token. Returns the new token (stored + 1), or -1 when someone took a
 * token after the caller's (a newer holder exists), or the counter is already past the
 * stored fence: then the row was written by a newer holder, not before a reset. A stored
 * fence equal to the caller's own token is a reset too: the counter climbed back to it, and
 * an older holder may still be running with that same token.
 */
const ADVANCE_FENCE_LUA = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local stored = tonumber(ARGV[1])
local token = tonumber(ARGV[2])
if current ~= token or current > stored then return -1 end
redis.call('SET', KEYS[1], stored)
return redis.call('INCR', KEYS[1])
`;

export interface Locks {
  /**
   * Acquire the scope's lock (TTL `ttlMs`, extended while `fn` runs), take a fencing token
   * and run `fn`. The lock is released when `fn` settles.
   *
   * If the lock is lost while `fn` runs (an extension is refused, or the lock expired),
   * `ctx.signal` aborts with a `LockLostError`; once `fn` settles, this rejects with that
   * `LockLostError` whatever `fn` returned. `fn` is always awaited, so when this settles no
   * work of `fn` is left running. An external `signal` aborts `ctx.signal` too (with its
   * own reason) and cancels a wait for the lock.
   *
   * @throws Error when `scope` is not `^[A-Za-z0-9:._-]{1,200}$`.
   * @throws LockBusyError when the scope is held (at once, or after `waitMs` with `wait`).
   * @throws LockLostError when the lock was lost while `fn` ran.
   * @throws DependencyUnavailableError when Redis neither grants nor refuses the lock.
   * @throws the external signal's reason when it aborts before the lock is acquired.
   */
  withSingleRunner<T>(
    scope: string,
    fn: (ctx: SingleRunnerContext) => Promise<T>,
    opts?: LockOptions & { signal?: AbortSignal },
  ): Promise<T>;
  /** Current fencing counter of a scope (0 if never taken). */
  currentFence(scope: string): Promise<number>;
  /**
   * Delete the fencing counters of scopes whose resource no longer exists (a pruned
   * simulation), so per-resource counters do not pile up in Redis for ever; a later holder
   * starts again from token 1. A scope whose lock is held keeps its counter: a holder (say, a
   * late attempt of the pruned run's job) already has a token from it, which a reset would
   * make look stale to nobody. (Resetting is unsafe only for a holder that took its token and
   * then lost its lock, which takes a whole lock TTL; call this right after the resource is
   * gone.)
   * @returns how many counters were deleted
   */
  forgetFences(scopes: readonly string[]): Promise<number>;
}

export interface LocksDeps {
  /**
   * The Redlock node(s). With several independent nodes a lock needs a majority; the
   * fencing counter lives on the first node.
   */
  redis: Redis | Redis[];
  /** Key prefix (REDIS_PREFIX). */
  prefix: string;
  logger: Logger;
  /** Lock TTL; the lock is extended when half of it is left. At least 200. @defaultValue 30_000 */
  ttlMs?: number;
}

const SCOPE_PATTERN = /^[A-Za-z0-9:._-]{1,200}$/;

/** Pause between attempts on a busy scope (±50 % jitter, so waiters do not move in step). */
const RETRY_DELAY_MS = 100;

/** @throws Error when `scope` is not a valid lock scope name. */
export function assertLockScope(scope: string): void {
  if (typeof scope !== 'string' || !SCOPE_PATTERN.test(scope)) {
    const shown = typeof scope === 'string' ? JSON.stringify(scope.slice(0, 60)) : typeof scope;
    throw new Error(`invalid lock scope ${shown}: expected 1-200 characters of A-Z a-z 0-9 : . _ -`);
  }
}

/** Milliseconds to wait before the next attempt on a busy scope, jittered, never past the deadline. */
export function retryDelayMs(remainingMs: number, random: () => number = Math.random): number {
  const jittered = Math.round(RETRY_DELAY_MS * (0.5 + random()));
  return Math.max(0, Math.min(jittered, remainingMs));
}

export function createLocks(deps: LocksDeps): Locks {
  const clients = Array.isArray(deps.redis) ? deps.redis : [deps.redis];
  const fenceClient = clients[0];
  if (!fenceClient) throw new Error('createLocks needs at least one Redis connection');
  const ttlMs = deps.ttlMs ?? 30_000;
  if (!Number.isInteger(ttlMs) || ttlMs < 200) {
    throw new Error(`lock ttlMs must be an integer of at least 200 ms, got ${ttlMs}`);
  }
  const { prefix, logger } = deps;
  // Extend at half-life: a stalled event loop (a long synchronous read) gets ttl/2 of slack.
  const extendThresholdMs = Math.floor(ttlMs / 2);

  // retryCount 0: every retry decision (busy scope, failed extension) is made below, where
  // it can see the deadline and the caller's signal.
  const redlock = new Redlock(clients, { retryCount: 0, automaticExtensionThreshold: extendThresholdMs });

  /** Whether a failed Redlock operation proves the lock is held by someone else (or gone). */
  async function refusedByQuorum(err: unknown): Promise<boolean> {
    if (!(err instanceof ExecutionError)) return false;
    const last = err.attempts[err.attempts.length - 1];
    if (!last) return false;
    const stats = await last;
    let refused = 0;
    for (const e of stats.votesAgainst.values()) if (e instanceof ResourceLockedError) refused += 1;
    // A majority is out of reach once more than (size - quorum) nodes refused.
    return refused > stats.membershipSize - stats.quorumSize;
  }

  async function acquire(
    scope: string,
    key: string,
    opts: LockOptions & { signal?: AbortSignal },
  ): Promise<Lock> {
    const waitMs = opts.wait ? (opts.waitMs ?? 30_000) : 0;
    const deadline = Date.now() + waitMs;
    for (;;) {
      opts.signal?.throwIfAborted();
      try {
        return await redlock.acquire([key], ttlMs);
      } catch (err) {
        if (!(await refusedByQuorum(err))) {
          throw new DependencyUnavailableError(
            `Redis did not grant or refuse the lock for scope "${scope}"`,
            5,
            err,
          );
        }
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw new LockBusyError(scope, { cause: err });
        // A retry pause while waiting for another holder, cancelled by the caller's signal.
        await delay(retryDelayMs(remaining), undefined, opts.signal ? { signal: opts.signal } : {}).catch(
          (pauseErr: unknown) => {
            opts.signal?.throwIfAborted();
            throw pauseErr;
          },
        );
      }
    }
  }

  async function release(
    lock: Lock,
    scope: string,
    fence: number,
    lost: boolean,
    level: 'info' | 'debug' = 'info',
  ): Promise<void> {
    try {
      await redlock.release(lock);
      logger[level]({ scope, fence }, 'lock released');
    } catch (err) {
      // The key is gone or someone else's, or Redis did not answer: the lock expires on its own.
      if (lost) logger.debug({ scope, fence, err: toError(err) }, 'lost lock not released');
      else logger.warn({ scope, fence, err: toError(err) }, 'lock release failed');
    }
  }

  return {
    async withSingleRunner<T>(
      scope: string,
      fn: (ctx: SingleRunnerContext) => Promise<T>,
      opts: LockOptions & { signal?: AbortSignal } = {},
    ): Promise<T> {
      assertLockScope(scope);
      const external = opts.signal;
      const key = redisKeys.lock(prefix, scope);
      let lock = await acquire(scope, key, opts);

      let fence = 0;
      const controller = new AbortController();
      let lost: LockLostError | undefined;
      let stopped = false;
      let timer: NodeJS.Timeout | undefined;
      let extension: Promise<void> | undefined;

      const onExternalAbort = () => controller.abort(external?.reason);

      const lose = (cause: unknown) => {
        if (lost) return;
        lost = new LockLostError(scope, { cause });
        logger.warn({ scope, fence, err: toError(cause) }, 'lock lost');
        controller.abort(lost);
      };

      // The lease renewal: a deadline timer, re-armed after each extension.
      const schedule = (inMs: number) => {
        if (stopped) return;
        timer = setTimeout(
          () => {
            timer = undefined;
            extension = extend();
          },
          Math.max(0, inMs),
        );
      };

      const extend = async (): Promise<void> => {
        try {
          lock = await lock.extend(ttlMs);
          schedule(lock.expiration - Date.now() - extendThresholdMs);
        } catch (err) {
          if (stopped) return;
          const left = lock.expiration - Date.now();
          if (left <= 0 || (await refusedByQuorum(err))) return lose(err);
          // A transient failure (a node timed out): try again while the lock is still ours.
          schedule(Math.min(RETRY_DELAY_MS, left));
        }
      };

      try {
        fence = await fenceClient.incr(redisKeys.fence(prefix, scope));
        logger[opts.logLevel ?? 'info']({ scope, fence }, 'lock acquired');
        schedule(lock.expiration - Date.now() - extendThresholdMs);
        if (external?.aborted) controller.abort(external.reason);
        else external?.addEventListener('abort', onExternalAbort, { once: true });

        let result: T;
        try {
          const ctx: SingleRunnerContext = {
            signal: controller.signal,
            fence,
            scope,
            async advanceFencePast(stored: number) {
              const next = Number(
                await fenceClient.eval(
                  ADVANCE_FENCE_LUA,
                  1,
                  redisKeys.fence(prefix, scope),
                  Math.floor(stored),
                  fence,
                ),
              );
              if (next < 0) throw new StaleFenceError(scope, fence);
              logger.warn(
                { scope, fence: next, stale_fence: fence, stored_fence: stored },
                'fencing counter was behind the database (Redis data lost?): advanced',
              );
              fence = next;
              ctx.fence = next;
              return next;
            },
          };
          result = await fn(ctx);
        } catch (err) {
          if (lost) throw lost;
          throw err;
        }
        // Settle the renewal before judging: an extension in flight may still keep the lock.
        stopped = true;
        if (timer) clearTimeout(timer);
        await extension;
        if (!lost && lock.expiration < Date.now()) {
          // The loop was too busy to renew: the lock lapsed while fn ran.
          lose(new Error(`lock expired ${Date.now() - lock.expiration} ms before the work finished`));
        }
        if (lost) throw lost;
        return result;
      } finally {
        stopped = true;
        if (timer) clearTimeout(timer);
        external?.removeEventListener('abort', onExternalAbort);
        await extension;
        await release(lock, scope, fence, lost !== undefined, opts.logLevel);
      }
    },

    async currentFence(scope: string): Promise<number> {
      assertLockScope(scope);
      const value = await fenceClient.get(redisKeys.fence(prefix, scope));
      return value === null ? 0 : Number(value);
    },

    async forgetFences(scopes: readonly string[]): Promise<number> {
      for (const scope of scopes) assertLockScope(scope);
      // With several Redlock nodes a lock may be held on a majority without the fence node:
      // a scope locked on any other node keeps its counter. The script re-checks the fence
      // node atomically with the delete.
      let free = [...scopes];
      for (const node of clients.slice(1)) {
        const held = await Promise.all(free.map((scope) => node.exists(redisKeys.lock(prefix, scope))));
        free = free.filter((_, i) => held[i] === 0);
      }
      if (free.length === 0) return 0;
      const keys = free.flatMap((scope) => [redisKeys.fence(prefix, scope), redisKeys.lock(prefix, scope)]);
      return Number(await fenceClient.eval(FORGET_FENCES_LUA, keys.length, ...keys));
    },
  };
}

/**
 * A fenced write made while holding the lock. If it is refused as stale, the stored fence is
 * ahead of ours although we hold the lock: Redis lost its fencing counter. Advance past the
 * stored fence (see `advanceFencePast`) and try once more.
 * @returns the first result that is not stale
 * @throws StaleFenceError when the retry is refused too, or a newer holder really wrote the row
 */
export async function withFenceRecovery<R>(
  lock: SingleRunnerContext,
  attempt: (fence: number) => Promise<R>,
  isStale: (result: R) => boolean,
  storedFence: (result: R) => number | Promise<number>,
): Promise<R> {
  const first = await attempt(lock.fence);
  if (!isStale(first)) return first;
  await lock.advanceFencePast(await storedFence(first));
  const second = await attempt(lock.fence);
  if (isStale(second)) throw new StaleFenceError(lock.scope, lock.fence);
  return second;
}
