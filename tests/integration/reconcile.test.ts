import { randomUUID } from 'node:crypto';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { createRedis } from '../../shared/redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/logger';
import { createLocks } from '../../shared/locks';
import { systemClock } from '../../shared/clock';
import { insertBackup, getBackup } from '../../shared/db/backups-store';
import { insertSimulationIfAbsent } from '../../shared/db/simulations-store';
import { insertProbeRun } from '../../shared/db/probe-runs-store';
import { insertPruningRun } from '../../shared/db/pruning-store';
import { createMaintenanceProcessors } from '../../workers/processors/maintenance';
import type { JobContext } from '../../workers/registry';
import { BACKENDS } from '../helpers/services';
import { startApi, type ApiUnderTest } from './api.harness';

/**
 * The reconciler (DESIGN.md §4.6) against real Redis and each database: work whose job is
 * gone is re-enqueued under its deterministic id; work whose job failed for good is settled;
 * work whose job id belongs to a job that completed without running it is enqueued again.
 */
describe.each(BACKENDS)('reconciler ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  const logger = createLogger({ level: 'silent' });
  const ctx: JobContext = { signal: new AbortController().signal, token: undefined, logger };
  let reconcile: (job: Job, ctx: JobContext) => Promise<unknown>;

  /** The reconcile processor over an api's database, Redis and queues. */
  const reconcilerOf = (under: ApiUnderTest, reconcilePage?: number, log = logger) =>
    createMaintenanceProcessors({
      redis: under.redis,
      prefix: under.prefix,
      db: under.db,
      queues: under.queues,
      locks: createLocks({ redis: under.redis, prefix: under.prefix, logger }),
      clock: systemClock,
      logger: log,
      config: under.config,
      ...(reconcilePage === undefined ? {} : { reconcilePage }),
    }).reconcile!;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('reconcile'), env: { RECONCILE_AFTER_MS: '0' } });
    reconcile = reconcilerOf(api);
  });
  afterAll(async () => {
    await api?.close();
  });

  const now = () => Date.now() - 1000;

  it('re-enqueues a backup, a simulation, a manual probe run and a manual pruning run whose jobs are gone, once', async () => {
    const backupId = randomUUID();
    await insertBackup(api.db.db, { id: backupId, label: null, trigger: 'manual', now: now() });
    await insertSimulationIfAbsent(api.db.db, {
      id: 'rec-sim-1',
      scenarioJson: JSON.stringify({
        arrival: { process: 'constant', rate_per_s: 1 },
        service: { distribution: 'constant', mean_ms: 1 },
        servers: 1,
        customers: 1,
        seed: 1,
      }),
      createdBy: null,
      now: now(),
    });
    const probeRun = await insertProbeRun(api.db.db, { id: randomUUID(), trigger: 'manual', now: now() });
    const pruneRun = await insertPruningRun(api.db.db, {
      id: randomUUID(),
      trigger: 'manual',
      dryRun: true,
      now: now(),
    });

    const first = (await reconcile({} as Job, ctx)) as { requeued: number };
    expect(first.requeued).toBe(4);
    expect(await api.queues.get('backups').getJob(`backup-${backupId}`)).toBeDefined();
    expect(await api.queues.get('simulations').getJob('sim-rec-sim-1')).toBeDefined();
    expect(await api.queues.get('probes').getJob(`probe-run-${probeRun.id}`)).toBeDefined();
    const prune = await api.queues.get('pruning').getJob(`prune-${pruneRun.id}`);
    expect(prune?.data).toEqual({ run_id: pruneRun.id, dry_run: true });

    // The jobs exist now: a second pass changes nothing.
    const second = (await reconcile({} as Job, ctx)) as { requeued: number; failed: number };
    expect(second).toMatchObject({ requeued: 0, failed: 0 });
  });

  it('settles a backup as failed when its job failed for good while the row still says running', async () => {
    const id = randomUUID();
    await insertBackup(api.db.db, { id, label: null, trigger: 'manual', now: now() });
    await api.db.db
      .updateTable('backups')
      .set({ status: 'running', fence: 3 })
      .where('id', '=', id)
      .execute();
    const queue = api.queues.get('backups');
    // Only this test's job in the queue, so the worker below takes exactly it.
    await queue.obliterate({ force: true });
    await queue.add(
      'create-backup',
      { backup_id: id, trigger: 'manual' },
      { jobId: `backup-${id}`, attempts: 1 },
    );
    // Fail it the way a worker would after its last attempt.
    const job = (await queue.getJob(`backup-${id}`))!;
    const token = 'test-token';
    const connection = createRedis(api.config.REDIS_URL, 'worker');
    const w = new Worker('backups', null, { connection, prefix: api.prefix });
    try {
      const taken = await w.getNextJob(token);
      expect(taken?.id).toBe(job.id);
      await taken!.moveToFailed(new Error('disk full'), token, false);
    } finally {
      await w.close();
      connection.disconnect();
    }

    const r = (await reconcile({} as Job, ctx)) as { failed: number };
    expect(r.failed).toBeGreaterThanOrEqual(1);
    const row = await getBackup(api.db.db, id);
    expect(row).toMatchObject({ status: 'failed' });
    expect(row?.error).toMatch(/job failed for good: disk full/);
  });

  it('re-adds the job of a queued backup whose job id already belongs to a completed job (a restored database), once', async () => {
    const id = randomUUID();
    const jobId = `backup-${id}`;
    const queue = api.queues.get('backups');
    await queue.obliterate({ force: true });
    // The job of an earlier life of this id: it ran against another database and completed.
    await queue.add('create-backup', { backup_id: id, trigger: 'manual' }, { jobId });
    const token = 'test-token';
    const connection = createRedis(api.config.REDIS_URL, 'worker');
    const w = new Worker('backups', null, { connection, prefix: api.prefix });
    try {
      const taken = await w.getNextJob(token);
      expect(taken?.id).toBe(jobId);
      await taken!.moveToCompleted({ backup_id: id, skipped: 'missing' }, token, false);
    } finally {
      await w.close();
      connection.disconnect();
    }
    expect(await queue.getJobState(jobId)).toBe('completed');
    // This database's row for it, still queued (as `taskyard restore` of an archive leaves it).
    await insertBackup(api.db.db, { id, label: null, trigger: 'manual', now: now() });

    await reconcile({} as Job, ctx);
    expect(await queue.getJobState(jobId)).toBe('waiting');
    const readded = await queue.getJob(jobId);
    expect(readded?.data).toEqual({ backup_id: id, trigger: 'manual' });
    expect(readded?.returnvalue ?? null).toBeNull();

    // The new job is waiting, not completed: a second pass leaves it as it is.
    await reconcile({} as Job, ctx);
    const after = await queue.getJob(jobId);
    expect(after?.timestamp).toBe(readded?.timestamp);
    expect(await queue.getJobState(jobId)).toBe('waiting');
    // The completed job was replaced, not kept beside the new one (ids are unique per queue).
    expect(await queue.getJobCounts('completed')).toEqual({ completed: 0 });
  });

  it('settles work whose job failed for good before its last attempt (stalled too often), and a manual probe run still queued', async () => {
    const simId = `rec-stalled-${randomUUID().slice(0, 8)}`;
    await insertSimulationIfAbsent(api.db.db, {
      id: simId,
      scenarioJson: '{}',
      createdBy: null,
      now: now(),
    });
    await api.db.db
      .updateTable('simulations')
      .set({ status: 'running', fence: 2 })
      .where('id', '=', simId)
      .execute();
    const probeRun = await insertProbeRun(api.db.db, { id: randomUUID(), trigger: 'manual', now: now() });

    // Each job fails for good with attempts left, as BullMQ fails a job that stalled more
    // than maxStalledCount, after one attempt of 5.
    const failForGood = async (queueName: string, jobName: string, data: object, jobId: string) => {
      const queue = api.queues.get(queueName);
      await queue.obliterate({ force: true });
      await queue.add(jobName, data, { jobId, attempts: 5 });
      const token = 'test-token';
      const connection = createRedis(api.config.REDIS_URL, 'worker');
      const w = new Worker(queueName, null, { connection, prefix: api.prefix });
      try {
        const taken = await w.getNextJob(token);
        expect(taken?.id).toBe(jobId);
        // UnrecoverableError: no retry, the way a stall past the limit ends a job.
        await taken!.moveToFailed(
          new UnrecoverableError('job stalled more than allowable limit'),
          token,
          false,
        );
      } finally {
        await w.close();
        connection.disconnect();
      }
      const job = await queue.getJob(jobId);
      expect(await job!.getState()).toBe('failed');
      expect(job!.attemptsMade).toBeLessThan(5);
    };
    await failForGood('simulations', 'run-simulation', { simulation_id: simId }, `sim-${simId}`);
    await failForGood('probes', 'probe-cycle', { run_id: probeRun.id }, `probe-run-${probeRun.id}`);

    await reconcile({} as Job, ctx);
    const sim = await api.db.db
      .selectFrom('simulations')
      .selectAll()
      .where('id', '=', simId)
      .executeTakeFirstOrThrow();
    expect(sim.status).toBe('failed');
    expect(sim.error).toMatch(/job failed for good: job stalled more than allowable limit/);
    const run = await api.db.db
      .selectFrom('probe_runs')
      .selectAll()
      .where('id', '=', probeRun.id)
      .executeTakeFirstOrThrow();
    expect(run.status).toBe('failed');
    expect(run.error).toMatch(/job failed for good/);
  });

  it('walks a backlog larger than one page a page per tick, so work behind the oldest page is reached', async () => {
    // Its own database and prefix: the walk's place and the rows it sees are this test's only.
    const own = await startApi({ databaseUrl: makeUrl('reconcile-walk'), env: { RECONCILE_AFTER_MS: '0' } });
    try {
      const walk = reconcilerOf(own, 2);
      // Five queued backups created in the same millisecond, so only the id orders them and
      // every page boundary falls inside one created_at. The two first still have their jobs
      // (a backlog the workers have not reached); the three others lost theirs.
      const ids = Array.from({ length: 5 }, (_, i) => `00000000-0000-4000-8000-00000000000${i}`);
      const base = Date.now() - 10_000;
      for (const [i, id] of ids.entries()) {
        await insertBackup(own.db.db, { id, label: null, trigger: 'manual', now: base });
        if (i < 2)
          await own.queues.add(
            'backups',
            'create-backup',
            { backup_id: id, trigger: 'manual' },
            `backup-${id}`,
          );
      }
      const queue = own.queues.get('backups');
      const present = async () =>
        (await Promise.all(ids.map((id) => queue.getJob(`backup-${id}`)))).map(Boolean);

      // Tick 1 checks the two oldest (both fine); before the walk, every tick stopped here.
      expect(await walk({} as Job, ctx)).toMatchObject({ checked: 2, requeued: 0 });
      expect(await present()).toEqual([true, true, false, false, false]);
      // Tick 2 goes on after them.
      expect(await walk({} as Job, ctx)).toMatchObject({ checked: 2, requeued: 2 });
      expect(await present()).toEqual([true, true, true, true, false]);
      // Tick 3 reaches the last one; its short page ends the walk.
      expect(await walk({} as Job, ctx)).toMatchObject({ checked: 1, requeued: 1 });
      expect(await present()).toEqual([true, true, true, true, true]);
      // Tick 4 starts again from the oldest: nothing left to do.
      expect(await walk({} as Job, ctx)).toMatchObject({ checked: 2, requeued: 0 });
      expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 5 });

      // A place that no longer parses, or is no whole number (Postgres would refuse it for a
      // bigint on every tick), or was lost with Redis, only restarts the walk.
      const cursorKey = `${own.prefix}:reconcile:cursor:backups`;
      for (const bad of ['not json', JSON.stringify({ createdAt: base + 0.5, id: ids[0] })]) {
        await own.redis.set(cursorKey, bad);
        expect(await walk({} as Job, ctx)).toMatchObject({ checked: 2, requeued: 0 });
      }
      // The place outlives three ticks (at least an hour).
      expect(await own.redis.ttl(cursorKey)).toBeGreaterThan(3000);
    } finally {
      await own.close();
    }
  });

  it('a row that cannot be checked is skipped, and the rows behind it are still reconciled', async () => {
    const own = await startApi({
      databaseUrl: makeUrl('reconcile-skip'),
      env: { RECONCILE_AFTER_MS: '0' },
    });
    try {
      const tick = reconcilerOf(own);
      const ids = [0, 1, 2].map((i) => `00000000-0000-4000-8000-00000000001${i}`);
      for (const id of ids) await insertBackup(own.db.db, { id, label: null, trigger: 'manual', now: now() });
      // The middle row's job key holds a string: reading its job fails (WRONGTYPE) every time.
      const poisoned = `${own.prefix}:backups:backup-${ids[1]}`;
      await own.redis.set(poisoned, 'not a job hash');
      try {
        expect(await tick({} as Job, ctx)).toMatchObject({ checked: 2, requeued: 2 });
        const queue = own.queues.get('backups');
        expect(await queue.getJob(`backup-${ids[0]}`)).toBeDefined();
        expect(await queue.getJob(`backup-${ids[2]}`)).toBeDefined();
      } finally {
        await own.redis.del(poisoned);
      }
    } finally {
      await own.close();
    }
  });

  it('warns once per tick about a queue whose jobs are overdue with no worker, and not once a worker serves it, it is paused or its jobs are not due', async () => {
    const lines: string[] = [];
    const logged = createLogger({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const withLog = reconcilerOf(api, undefined, logged);
    const tick = async () => (await withLog({ id: 'tick' } as Job, ctx)) as { unserved: string[] };
    const warnsFor = (queue: string) =>
      lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.queue === queue);
    const pruning = api.queues.get('pruning');
    const probes = api.queues.get('probes');
    const later = api.queues.get('noop');
    for (const q of [pruning, probes, later]) await q.obliterate({ force: true });
    // Due at once (RECONCILE_AFTER_MS is 0 here): overdue by the next tick.
    await pruning.add('prune', { run_id: randomUUID(), dry_run: true }, { jobId: 'unserved-1' });
    await probes.add('probe-cycle', { run_id: randomUUID() }, { jobId: 'unserved-2' });
    await probes.pause();
    // Added two hours ago, failed, and now in a backoff that ends in an hour: not late yet
    // (its own timestamp + delay would say it was).
    await later.add('noop', {}, { jobId: 'unserved-3', timestamp: Date.now() - 7_200_000 });
    const taker = createRedis(api.config.REDIS_URL, 'worker');
    const takerWorker = new Worker('noop', null, { connection: taker, prefix: api.prefix, autorun: false });
    try {
      const taken = (await takerWorker.getNextJob('backoff-token'))!;
      expect(taken.id).toBe('unserved-3');
      await taken.moveToDelayed(Date.now() + 3_600_000, 'backoff-token');
    } finally {
      await takerWorker.close();
      await taker.quit();
    }
    expect(await later.getJobState('unserved-3')).toBe('delayed');
    try {
      expect((await tick()).unserved).toContain('pruning');
      expect(warnsFor('pruning')).toHaveLength(1);
      // Our job, and any manual pruning run the earlier tests left queued (the tick re-adds those).
      expect(warnsFor('pruning')[0]).toMatchObject({
        level: 40,
        reconcile_job_id: 'tick',
        waiting: await pruning.getJobCountByTypes('wait', 'prioritized', 'delayed'),
      });
      expect(String(warnsFor('pruning')[0]!.msg)).toContain('--queues pruning');
      // Paused on purpose, or not due yet: no warning.
      expect(warnsFor('probes')).toHaveLength(0);
      expect(warnsFor('noop')).toHaveLength(0);

      const connection = createRedis(api.config.REDIS_URL, 'worker');
      const w = new Worker('pruning', null, { connection, prefix: api.prefix, autorun: false });
      try {
        await w.waitUntilReady();
        expect((await tick()).unserved).not.toContain('pruning');
        expect(warnsFor('pruning')).toHaveLength(1);
      } finally {
        await w.close();
        await connection.quit();
      }
    } finally {
      await probes.resume();
      for (const q of [pruning, probes, later]) await q.obliterate({ force: true });
    }
  });
});
