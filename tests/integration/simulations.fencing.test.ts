import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  completeSimulationRun,
  getSimulationCheckpoint,
  markSimulationCancelled,
  recordSimulationProgress,
  saveSimulationCheckpoint,
  startSimulationRun,
  upsertSimulationCheckpoint,
} from '../../shared/db/simulations-store';
import { createLocks, withFenceRecovery } from '../../shared/locks';
import { createLogger } from '../../shared/logger';
import { redisKeys } from '../../shared/redis';
import { BACKENDS } from '../helpers/services';
import { startApi, type ApiUnderTest } from './api.harness';

/**
 * DESIGN.md §4.3 for simulations: a paused holder (older fencing token) that wakes up after
 * a newer holder took over changes nothing: not the checkpoint, the progress, nor the end.
 */
describe.each(BACKENDS)('simulation writes are fenced ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('simfence') });
  });
  afterAll(async () => {
    await api?.close();
  });

  const checkpoint = (fence: number, state: string) => ({
    simulationId: 'fenced-1',
    fence,
    stateJson: state,
    progressBp: fence * 1000,
    events: fence * 100,
    elapsedMs: fence * 10,
    now: Date.now(),
  });

  it("a stale holder's late checkpoint, progress and result are rejected after a newer holder wrote", async () => {
    const db = api.db.db;
    await db
      .insertInto('simulations')
      .values({ id: 'fenced-1', status: 'queued', scenario: '{}', created_at: Date.now() })
      .execute();

    // Holder 1 starts and checkpoints, then pauses (GC, a frozen VM …) and loses its lock.
    expect(
      (await startSimulationRun(db, { id: 'fenced-1', fence: 1, now: Date.now(), progressBp: 0 })).outcome,
    ).toBe('started');
    expect(await saveSimulationCheckpoint(db, checkpoint(1, '"by-1"'))).toBe(true);
    // Holder 2 takes over and checkpoints.
    const second = await startSimulationRun(db, {
      id: 'fenced-1',
      fence: 2,
      now: Date.now(),
      progressBp: 1000,
    });
    expect(second.outcome).toBe('started');
    expect(await saveSimulationCheckpoint(db, checkpoint(2, '"by-2"'))).toBe(true);

    // Holder 1 wakes up: every write it tries changes no row.
    expect(await upsertSimulationCheckpoint(db, checkpoint(1, '"late-by-1"'))).toBe(false);
    expect(await saveSimulationCheckpoint(db, checkpoint(1, '"late-by-1"'))).toBe(false);
    expect(
      await recordSimulationProgress(db, { id: 'fenced-1', fence: 1, progressBp: 9_999 }),
    ).toBeUndefined();
    expect(
      await completeSimulationRun(db, {
        id: 'fenced-1',
        fence: 1,
        now: Date.now(),
        resultJson: '"stale"',
        elapsedMs: 1,
        events: 1,
      }),
    ).toBe(false);
    expect(await markSimulationCancelled(db, { id: 'fenced-1', fence: 1, now: Date.now() })).toBe(false);
    expect(
      (await startSimulationRun(db, { id: 'fenced-1', fence: 1, now: Date.now(), progressBp: 0 })).outcome,
    ).toBe('stale-fence');

    const cp = await getSimulationCheckpoint(db, 'fenced-1');
    expect(cp).toMatchObject({ state: '"by-2"', progress_bp: 2000 });
    expect(Number(cp!.fence)).toBe(2);
    const row = await db
      .selectFrom('simulations')
      .selectAll()
      .where('id', '=', 'fenced-1')
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ status: 'running', result: null, progress_bp: 2000, attempts: 2 });
    expect(Number(row.fence)).toBe(2);

    // The current holder's writes still go through.
    expect(await recordSimulationProgress(db, { id: 'fenced-1', fence: 2, progressBp: 2500 })).toEqual({
      cancelRequestedAt: null,
    });
    expect(await upsertSimulationCheckpoint(db, checkpoint(2, '"again-by-2"'))).toBe(true);
  });

  it('a checkpoint upsert alone is refused for an older token once a newer one is stored', async () => {
    const db = api.db.db;
    const cp = (fence: number) => ({ ...checkpoint(fence, `"cp-${fence}"`), simulationId: 'fenced-2' });
    await db
      .insertInto('simulations')
      .values({ id: 'fenced-2', status: 'running', scenario: '{}', created_at: Date.now(), fence: 5 })
      .execute();
    expect(await upsertSimulationCheckpoint(db, cp(5))).toBe(true);
    expect(await upsertSimulationCheckpoint(db, cp(4))).toBe(false);
    expect(await upsertSimulationCheckpoint(db, cp(6))).toBe(true);
    expect((await getSimulationCheckpoint(db, 'fenced-2'))?.state).toBe('"cp-6"');
  });

  it('after Redis loses the counter, a new holder given the very token the row holds advances past it, and the old holder is refused', async () => {
    const db = api.db.db;
    const id = 'fenced-reset';
    const scope = `simulation:${id}`;
    await db
      .insertInto('simulations')
      .values({ id, status: 'queued', scenario: '{}', created_at: Date.now() })
      .execute();
    const locks = createLocks({
      redis: api.redis,
      prefix: api.prefix,
      logger: createLogger({ level: 'silent' }),
    });

    // Holder 1, on the run's first attempt: token 1. Then Redis loses its data (counter and
    // lock) while holder 1 still runs.
    const first = await locks.withSingleRunner(scope, async (lock) => {
      expect(
        (await startSimulationRun(db, { id, fence: lock.fence, now: Date.now(), progressBp: 0 })).outcome,
      ).toBe('started');
      return lock.fence;
    });
    expect(first).toBe(1);
    await api.redis.del(redisKeys.fence(api.prefix, scope));

    // Holder 2 gets token 1 again. An equal token must not start: it advances past the row.
    const second = await locks.withSingleRunner(scope, async (lock) => {
      expect(lock.fence).toBe(1);
      const r = await withFenceRecovery(
        lock,
        (fence) => startSimulationRun(db, { id, fence, now: Date.now(), progressBp: 0 }),
        (x) => x.outcome === 'stale-fence',
        (x) => ('row' in x ? Number(x.row.fence) : 0),
      );
      expect(r.outcome).toBe('started');
      return lock.fence;
    });
    expect(second).toBe(2);

    // Holder 1's late writes change nothing.
    expect(await recordSimulationProgress(db, { id, fence: 1, progressBp: 5000 })).toBeUndefined();
    expect(await saveSimulationCheckpoint(db, { ...checkpoint(1, '"late"'), simulationId: id })).toBe(false);
    const row = await db
      .selectFrom('simulations')
      .select(['fence', 'attempts'])
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    expect(Number(row.fence)).toBe(2);
    expect(Number(row.attempts)).toBe(2);
  });
});
