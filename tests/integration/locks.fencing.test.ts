import fs from 'node:fs';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { LockLostError, StaleFenceError } from '../../shared/errors';
import { createLocks, type Locks } from '../../shared/locks';
import { createLogger } from '../../shared/logger';
import { createRedis, deleteKeysWithPrefix, redisKeys } from '../../shared/redis';
import { BACKENDS, startGate, testRedisUrl, uniquePrefix } from '../helpers/services';

const prefix = uniquePrefix('locks-fencing');
const logger = createLogger({ level: 'silent' });

let redisA: Redis;
let redisB: Redis;
let admin: Redis;

beforeAll(() => {
  redisA = createRedis(testRedisUrl(), 'client');
  redisB = createRedis(testRedisUrl(), 'client');
  admin = createRedis(testRedisUrl(), 'client');
});

afterAll(async () => {
  await deleteKeysWithPrefix(admin, prefix);
  await Promise.all([redisA.quit(), redisB.quit(), admin.quit()]);
});

const aborted = (signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });

describe.each(BACKENDS)('fenced writes on $backend', ({ backend, makeUrl }) => {
  const url = makeUrl('locks_fencing');
  let handle: DatabaseHandle;
  let db: Kysely<any>;

  beforeAll(async () => {
    handle = await createDatabase(url);
    db = handle.db as unknown as Kysely<any>;
    await db.schema
      .createTable('fenced_rows')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('value', 'text', (c) => c.notNull())
      .addColumn('fence', 'integer', (c) => c.notNull())
      .execute();
  });

  afterAll(async () => {
    if (backend === 'postgres') {
      const schema = new URL(url).searchParams.get('schema');
      if (schema) await sql`drop schema ${sql.id(schema)} cascade`.execute(db);
    }
    await handle.close();
    if (backend === 'sqlite')
      fs.rmSync(path.dirname(url.slice('sqlite:'.length)), { recursive: true, force: true });
  });

  /** A holder's durable write: applied only while no newer token has written. */
  async function fencedWrite(scope: string, id: string, value: string, fence: number): Promise<void> {
    const result = await db
      .updateTable('fenced_rows')
      .set({ value, fence })
      .where('id', '=', id)
      .where('fence', '<=', fence)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 0) throw new StaleFenceError(scope, fence);
  }

  async function readRow(id: string): Promise<{ value: string; fence: number }> {
    const row = await db
      .selectFrom('fenced_rows')
      .select(['value', 'fence'])
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    return { value: row.value, fence: Number(row.fence) };
  }

  /**
   * Holder A writes, loses its lock (its key is deleted, so it cannot be extended), B takes
   * the scope and writes, then A writes late. Returns A's outcome and its late write's error.
   */
  async function raceStaleHolder(
    scope: string,
    id: string,
    a: Locks,
    b: Locks,
    { waitForAbort }: { waitForAbort: boolean },
  ): Promise<{ aOutcome: unknown; lateWriteError: unknown; fenceA: number; fenceB: number }> {
    await db.insertInto('fenced_rows').values({ id, value: 'initial', fence: 0 }).execute();
    const entered = startGate();
    const lateWrite = startGate();
    let fenceA = 0;
    let signalA: AbortSignal | undefined;
    let lateWriteError: unknown;
    const runA = a
      .withSingleRunner(scope, async (ctx) => {
        fenceA = ctx.fence;
        signalA = ctx.signal;
        await fencedWrite(scope, id, 'a-early', ctx.fence);
        entered.open();
        await lateWrite.wait();
        // A holder that has not stopped (or not yet noticed) writes after its lock is gone.
        try {
          await fencedWrite(scope, id, 'a-late', ctx.fence);
        } catch (err) {
          lateWriteError = err;
          throw err;
        }
        return 'a-done';
      })
      .catch((err: unknown) => err);
    await entered.wait();
    expect(await readRow(id)).toEqual({ value: 'a-early', fence: fenceA });

    await admin.del(redisKeys.lock(prefix, scope));
    const fenceB = await b.withSingleRunner(
      scope,
      async (ctx) => {
        await fencedWrite(scope, id, 'b', ctx.fence);
        return ctx.fence;
      },
      { wait: true, waitMs: 10_000 },
    );
    if (waitForAbort && signalA) await aborted(signalA);
    lateWrite.open();
    return { aOutcome: await runA, lateWriteError, fenceA, fenceB };
  }

  it('a holder that never noticed its loss writes nothing: its late write is a StaleFenceError', async () => {
    const scope = `fencing:${backend}:unaware`;
    // A 30 s TTL: A would not try to extend for 15 s, so it cannot notice the deleted key.
    const a = createLocks({ redis: redisA, prefix, logger, ttlMs: 30_000 });
    const b = createLocks({ redis: redisB, prefix, logger, ttlMs: 30_000 });
    const r = await raceStaleHolder(scope, `${backend}-unaware`, a, b, { waitForAbort: false });

    expect(r.fenceB).toBe(r.fenceA + 1);
    expect(r.lateWriteError).toBeInstanceOf(StaleFenceError);
    expect((r.lateWriteError as StaleFenceError).token).toBe(r.fenceA);
    expect(r.aOutcome).toBe(r.lateWriteError);
    expect(await readRow(`${backend}-unaware`)).toEqual({ value: 'b', fence: r.fenceB });
    expect(await a.currentFence(scope)).toBe(r.fenceB);
  });

  it('a holder whose lock lapsed is aborted, and its late write still changes no row', async () => {
    const scope = `fencing:${backend}:lapsed`;
    const a = createLocks({ redis: redisA, prefix, logger, ttlMs: 500 });
    const b = createLocks({ redis: redisB, prefix, logger, ttlMs: 500 });
    const r = await raceStaleHolder(scope, `${backend}-lapsed`, a, b, { waitForAbort: true });

    expect(r.fenceB).toBe(r.fenceA + 1);
    expect(r.lateWriteError).toBeInstanceOf(StaleFenceError);
    expect(r.aOutcome).toBeInstanceOf(LockLostError);
    expect(await readRow(`${backend}-lapsed`)).toEqual({ value: 'b', fence: r.fenceB });
  });
});

describe('forgetFences', () => {
  it('deletes only counters whose scope no node holds; a lock on any node keeps its counter', async () => {
    // Two Redlock "nodes": logical databases 0 and 1 of one server have separate keyspaces.
    const second = createRedis(testRedisUrl().replace(/\/\d*$/, '') + '/1', 'client');
    try {
      const locks = createLocks({ redis: [redisA, second], prefix, logger });
      const scopes = ['simulation:free', 'simulation:held-first', 'simulation:held-second'];
      for (const scope of scopes) await admin.set(redisKeys.fence(prefix, scope), '5');
      await redisA.set(redisKeys.lock(prefix, 'simulation:held-first'), 'x', 'PX', 60_000);
      await second.set(redisKeys.lock(prefix, 'simulation:held-second'), 'x', 'PX', 60_000);

      expect(await locks.forgetFences(scopes)).toBe(1);
      expect(await locks.currentFence('simulation:free')).toBe(0);
      expect(await locks.currentFence('simulation:held-first')).toBe(5);
      expect(await locks.currentFence('simulation:held-second')).toBe(5);
      expect(await locks.forgetFences([])).toBe(0);
    } finally {
      await deleteKeysWithPrefix(second, prefix);
      await second.quit();
    }
  });
});
