import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { z } from 'zod';
import type { noopQueue } from '../../queues/noop';
import type { JobProcessor } from '../registry';

export type NoopPayload = z.infer<(typeof noopQueue)['jobs']['noop']>;

/** Hash counting completed executions per job id, `<prefix>:effects:noop`. Not under `<prefix>:noop:`, which is BullMQ's key space for the queue (a job with id `effects` would own that key, and obliterate would trip over the hash). */
export function noopEffectsKey(prefix: string): string {
  return `${prefix}:effects:noop`;
}

/**
 * The test-only `noop` job: completes at once, or after `hold_ms` (stopping early, without an
 * effect, when its signal aborts). Its one effect, recorded after the work, is
 * `HINCRBY <prefix>:effects:noop <jobId> 1`, so tests count executions exactly.
 */
export function createNoopProcessor(deps: { redis: Redis; prefix: string }): JobProcessor<NoopPayload, void> {
  const key = noopEffectsKey(deps.prefix);
  return async (job, ctx) => {
    const holdMs = job.data.hold_ms ?? 0;
    // The hold stands in for the duration of real work; the signal ends it early.
    if (holdMs > 0) await sleep(holdMs, undefined, { signal: ctx.signal });
    ctx.signal.throwIfAborted();
    await deps.redis.hincrby(key, job.id ?? 'unknown', 1);
  };
}
