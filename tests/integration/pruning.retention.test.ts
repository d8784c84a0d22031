import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ABANDONED_RUN_ERROR } from '../../shared/db/fenced-run';
import { randomUUID } from 'node:crypto';
import { Worker } from 'bullmq';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../shared/clock';
import { emptyPruneCounts, type PruneCounts, type PruneKind } from '../../shared/db/pruning-store';
import { createLocks, type Locks } from '../../shared/locks';
import { createRedis } from '../../shared/redis';
import { createClient, TaskyardProblemError } from '../../shared/client/index';
import { pruningQueue } from '../../queues/pruning';
import { buildRegistry } from '../../workers/registry';
import { createWorkerRuntime } from '../../workers/runtime';
import {
  createPruningProcessors,
  PRUNE_BATCH,
  runPruning,
  type PruningProcessorDeps,
} from '../../workers/processors/pruning';
import { BACKENDS, startGate, waitFor } from '../helpers/services';
import { allPages, call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

/**
 * Retention pruning on real Redis and each database: exact counts per kind with rows on both
 * sides of every boundary, dry runs, batches of at most 1,000, interruption and resumption,
 * backups with their files, BullMQ finished jobs, the busy scope, and the HTTP API.
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** An archive of another install sharing BACKUP_DIR: no row here names it. */
const FOREIGN_ARCHIVE = `taskyard-backup-${randomUUID()}.ndjson.gz`;

describe.each(BACKENDS)('pruning ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let backupDir: string;
  let clock: ManualClock;
  let locks: Locks;
  let T: number;
  const cleanups: Array<() => Promise<unknown>> = [];

  beforeEach(async () => {
    backupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-prune-'));
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    T = clock.now().getTime();
    api = await startApi({
      databaseUrl: makeUrl('prune'),
      clock,
      env: { BACKUP_DIR: backupDir, BACKUP_KEEP_LAST: '2', LOG_LEVEL: 'info' },
    });
    locks = createLocks({ redis: api.redis, prefix: api.prefix, logger: api.logger });
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    await api?.close();
    fs.rmSync(backupDir, { recursive: true, force: true });
  });

  function deps(extra: Partial<PruningProcessorDeps> = {}): PruningProcessorDeps {
    return {
      db: api.db,
      locks,
      queues: api.queues,
      redis: api.redis,
      config: api.config,
      clock,
      ...extra,
    };
  }

  const db = () => api.db.db;

  const SCENARIO = {
    arrival: { process: 'poisson', rate_per_s: 10 },
    service: { distribution: 'exponential', mean_ms: 50 },
    servers: 1,
    customers: 100,
  };
  const postSimulation = (simulationId: string, idempotencyKey?: string) =>
    call(api, '/v1/simulations', {
      method: 'POST',
      key: api.keys.write,
      headers: {
        'content-type': 'application/json',
        ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      },
      body: JSON.stringify({ simulation_id: simulationId, scenario: SCENARIO }),
    });

  async function newRun(dryRun = false): Promise<string> {
    const id = randomUUID();
    await db()
      .insertInto('pruning_runs')
      .values({ id, trigger: 'manual', dry_run: dryRun ? 1 : 0, status: 'queued', created_at: T })
      .execute();
    return id;
  }
  const runRow = (id: string) =>
    db().selectFrom('pruning_runs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const prune = async (dryRun = false, extra: Partial<PruningProcessorDeps> = {}) => {
    const runId = await newRun(dryRun);
    return runPruning(deps(extra), { runId, dryRun, logger: api.logger });
  };

  async function idem(
    n: number,
    expiresAt: number,
    state: 'completed' | 'in_flight' = 'completed',
    lease?: number,
  ) {
    const rows = Array.from({ length: n }, () => ({
      principal_id: 'p1',
      key: randomUUID(),
      fingerprint: 'f',
      state,
      claim_token: 'c',
      lease_expires_at: state === 'in_flight' ? (lease ?? null) : null,
      response_status: state === 'completed' ? 202 : null,
      response_body: state === 'completed' ? '{}' : null,
      response_location: null,
      created_at: expiresAt - DAY,
      expires_at: expiresAt,
    }));
    for (let i = 0; i < rows.length; i += 500) {
      await db()
        .insertInto('idempotency_keys')
        .values(rows.slice(i, i + 500))
        .execute();
    }
  }
  const countRows = async (
    table:
      | 'idempotency_keys'
      | 'outbox'
      | 'probe_samples'
      | 'probe_runs'
      | 'simulations'
      | 'simulation_checkpoints'
      | 'backups',
  ) =>
    Number(
      (
        await db()
          .selectFrom(table)
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  /** Rows of every kind on both sides of every boundary. @returns what a run deletes. */
  async function seedAll(): Promise<PruneCounts> {
    // Idempotency: expires_at <= now goes, unless an in-flight lease is still valid.
    await idem(1, T - 1);
    await idem(1, T); // exactly at expiry: expired
    await idem(1, T + 1); // kept
    await idem(1, T - 1, 'in_flight', T + 1_000); // valid lease: kept
    await idem(1, T - 1, 'in_flight', T - 1); // lapsed lease: goes
    await idem(1, T, 'in_flight', T); // lapses now: goes
    // Outbox: dispatched and created more than a day ago.
    const ob = (created: number, dispatched: number | null) => ({
      id: randomUUID(),
      queue: 'backups',
      job_name: 'create-backup',
      job_id: randomUUID(),
      payload: '{}',
      created_at: created,
      dispatched_at: dispatched,
      attempts: 1,
      last_error: null,
    });
    await db()
      .insertInto('outbox')
      .values([
        ob(T - DAY - 1, T - DAY), // goes
        ob(T - 5 * DAY, T - 5 * DAY), // goes
        ob(T - DAY, T - DAY), // exactly a day: kept
        ob(T - 10 * DAY, null), // never dispatched: kept
        ob(T - HOUR, T - HOUR), // young: kept
      ])
      .execute();
    // Probe samples: older than 7 days.
    const ps = (checked: number) => ({
      id: randomUUID(),
      provider_id: 'prov',
      run_id: null,
      ok: 1,
      status_code: 200,
      latency_ms: 3,
      error_class: null,
      checked_at: checked,
    });
    await db()
      .insertInto('probe_samples')
      .values([ps(T - 7 * DAY - 1), ps(T - 30 * DAY), ps(T - 7 * DAY), ps(T)])
      .execute();
    // Probe and pruning runs: finished more than RUN_RETENTION_DAYS (30) ago; never an
    // unfinished one, however old.
    const run = (status: string, finished: number | null) => ({
      id: randomUUID(),
      trigger: 'scheduled' as const,
      status: status as 'succeeded',
      created_at: T - 60 * DAY,
      started_at: finished === null ? null : T - 60 * DAY,
      finished_at: finished,
    });
    await db()
      .insertInto('probe_runs')
      .values([
        run('succeeded', T - 30 * DAY - 1), // goes
        run('failed', T - 45 * DAY), // goes
        run('skipped', T - 31 * DAY), // goes
        run('succeeded', T - 30 * DAY), // exactly 30 days: kept
        run('running', null), // unfinished: kept
        run('queued', null), // kept
      ])
      .execute();
    await db()
      .insertInto('pruning_runs')
      .values([
        run('succeeded', T - 31 * DAY), // goes
        run('succeeded', T - DAY), // young: kept
        run('queued', null), // kept
      ])
      .execute();
    // Simulations: terminal and finished more than 30 days ago, with their checkpoints.
    const sim = async (id: string, status: string, finished: number | null, checkpoint: boolean) => {
      await db()
        .insertInto('simulations')
        .values({
          id,
          status: status as 'succeeded',
          scenario: '{}',
          created_at: T - 60 * DAY,
          finished_at: finished,
        })
        .execute();
      if (checkpoint) {
        await db()
          .insertInto('simulation_checkpoints')
          .values({
            simulation_id: id,
            fence: 1,
            state: '{}',
            progress_bp: 5,
            events: 1,
            saved_at: T - 50 * DAY,
          })
          .execute();
      }
    };
    await sim('old-succeeded', 'succeeded', T - 30 * DAY - 1, true); // goes with checkpoint
    await sim('old-failed', 'failed', T - 31 * DAY, false); // goes
    await sim('old-cancelled', 'cancelled', T - 40 * DAY, true); // goes with checkpoint
    await sim('boundary', 'succeeded', T - 30 * DAY, true); // exactly 30 days: kept
    await sim('still-running', 'running', T - 40 * DAY, true); // not terminal: kept
    await sim('queued', 'queued', null, false);
    // Backups: 4 succeeded (the newest 2 are kept), a failed one, and an archive this database
    // has no row for (another install's): retention must leave it alone.
    for (let i = 0; i < 4; i++) {
      const id = randomUUID();
      const fileName = `taskyard-backup-${id}.ndjson.gz`;
      fs.writeFileSync(path.join(backupDir, fileName), `archive ${i}`);
      await db()
        .insertInto('backups')
        .values({
          id,
          label: `b${i}`,
          status: 'succeeded',
          trigger: 'manual',
          file_name: fileName,
          created_at: T - (10 - i) * HOUR,
          finished_at: T - (10 - i) * HOUR,
        })
        .execute();
    }
    await db()
      .insertInto('backups')
      .values({
        id: randomUUID(),
        label: 'failed',
        status: 'failed',
        trigger: 'manual',
        created_at: T - 20 * HOUR,
        finished_at: T - 20 * HOUR,
      })
      .execute();
    fs.writeFileSync(path.join(backupDir, FOREIGN_ARCHIVE), 'another install');
    fs.writeFileSync(path.join(backupDir, 'notes.txt'), 'not an archive');
    return {
      ...emptyPruneCounts(),
      idempotency_keys: 4,
      outbox: 2,
      probe_samples: 2,
      probe_runs: 3,
      pruning_runs: 1,
      simulations: 3,
      simulation_checkpoints: 2,
      backups: 2,
      backup_files: 2,
    };
  }

  /**
   * Finished BullMQ jobs on both sides of the retention boundary. Queue.clean ages jobs by
   * their real finish time, so the clock is moved to the boundary plus JOB_RETENTION_HOURS.
   * @returns jobs a run deletes (3: 2 completed, 1 failed)
   */
  async function seedJobs(): Promise<number> {
    const queue = api.queues.get('noop');
    const conn = createRedis(api.config.REDIS_URL, 'worker');
    const worker = new Worker(
      'noop',
      async (job) => {
        if ((job.data as { seq?: number }).seq === 1) throw new Error('planned failure');
      },
      { connection: conn, prefix: api.prefix, concurrency: 1 },
    );
    cleanups.push(async () => {
      await worker.close();
      await conn.quit();
    });
    const finished = async (n: number) =>
      waitFor(async () => (await queue.getJobCountByTypes('completed', 'failed')) === n, {
        what: `${n} finished jobs`,
      });
    const opts = { attempts: 1 };
    await queue.add('noop', { seq: 0 }, opts);
    await queue.add('noop', { seq: 1 }, opts);
    await queue.add('noop', { seq: 2 }, opts);
    await finished(3);
    const lastOld = Math.max(
      ...(await queue.getJobs(['completed', 'failed'])).map((j) => Number(j.finishedOn)),
    );
    const boundary = lastOld + 50;
    await waitFor(() => Date.now() > boundary + 50, { what: 'a clear gap after the boundary' });
    await queue.add('noop', { seq: 1 }, opts);
    await queue.add('noop', { seq: 3 }, opts);
    await finished(5);
    clock.advance(boundary + api.config.JOB_RETENTION_HOURS * HOUR - clock.now().getTime());
    T = clock.now().getTime();
    return 3;
  }

  const snapshot = async () => ({
    idempotency_keys: await countRows('idempotency_keys'),
    outbox: await countRows('outbox'),
    probe_samples: await countRows('probe_samples'),
    probe_runs: await countRows('probe_runs'),
    // The seeded ones: the test's own runs (manual) are added by every prune() call.
    pruning_runs: Number(
      (
        await db()
          .selectFrom('pruning_runs')
          .select((eb) => eb.fn.countAll().as('n'))
          .where('trigger', '=', 'scheduled')
          .executeTakeFirstOrThrow()
      ).n,
    ),
    simulations: await countRows('simulations'),
    simulation_checkpoints: await countRows('simulation_checkpoints'),
    backups: await countRows('backups'),
    files: fs.readdirSync(backupDir).sort(),
    jobs: await api.queues.get('noop').getJobCountByTypes('completed', 'failed'),
  });

  it('a dry run reports the exact counts per kind and deletes nothing; the run then deletes exactly those and nothing younger', async () => {
    const jobs = await seedJobs();
    const expected = { ...(await seedAll()), jobs };
    // Fencing counters in Redis of a simulation that goes and of one that stays.
    await api.redis.set(`${api.prefix}:fence:simulation:old-succeeded`, '3');
    await api.redis.set(`${api.prefix}:fence:simulation:boundary`, '4');
    // A pruned simulation whose lock is still held (a late attempt of its job): the holder's
    // token came from this counter, so the counter stays.
    await api.redis.set(`${api.prefix}:fence:simulation:old-failed`, '7');
    await api.redis.set(`${api.prefix}:lock:simulation:old-failed`, 'holder', 'PX', 60_000);
    const before = await snapshot();

    const dry = await prune(true);
    expect(dry).toMatchObject({ status: 'succeeded', counts: expected });
    expect(await snapshot()).toEqual(before);
    expect(await locks.currentFence('simulation:old-succeeded')).toBe(3);

    const real = await prune(false);
    expect(real).toMatchObject({ status: 'succeeded', counts: expected });
    const row = await runRow(real.run_id);
    expect(row.status).toBe('succeeded');
    expect(JSON.parse(row.counts!)).toEqual(expected);
    expect(Number(row.finished_at)).toBe(T);

    // A pruned simulation's counter goes with it; a kept one's stays. (The dry run kept both.)
    expect(await locks.currentFence('simulation:old-succeeded')).toBe(0);
    expect(await locks.currentFence('simulation:boundary')).toBe(4);
    expect(await locks.currentFence('simulation:old-failed')).toBe(7);

    const after = await snapshot();
    expect(after).toMatchObject({
      idempotency_keys: 2,
      outbox: 3,
      probe_samples: 2,
      probe_runs: 3,
      pruning_runs: 2,
      simulations: 3,
      simulation_checkpoints: 2,
      backups: 3,
      jobs: 2,
    });
    const left = await db()
      .selectFrom('idempotency_keys')
      .select(['expires_at', 'lease_expires_at'])
      .orderBy('expires_at')
      .execute();
    expect(
      left.map((r) => [
        Number(r.expires_at),
        r.lease_expires_at === null ? null : Number(r.lease_expires_at),
      ]),
    ).toEqual([
      [T - 1, T + 1_000],
      [T + 1, null],
    ]);
    const sims = await db().selectFrom('simulations').select('id').orderBy('id').execute();
    expect(sims.map((s) => s.id)).toEqual(['boundary', 'queued', 'still-running']);
    const cps = await db()
      .selectFrom('simulation_checkpoints')
      .select('simulation_id')
      .orderBy('simulation_id')
      .execute();
    expect(cps.map((c) => c.simulation_id)).toEqual(['boundary', 'still-running']);
    // The newest two succeeded backups and the failed one stay, each succeeded row with its file.
    const backups = await db().selectFrom('backups').selectAll().orderBy('finished_at').execute();
    expect(backups.map((b) => b.label)).toEqual(['failed', 'b2', 'b3']);
    expect(after.files).toEqual(
      [...backups.filter((b) => b.file_name).map((b) => b.file_name!), FOREIGN_ARCHIVE, 'notes.txt'].sort(),
    );

    // Nothing left to do: a second run deletes nothing.
    expect(await prune(false)).toMatchObject({ status: 'succeeded', counts: emptyPruneCounts() });
  });

  it('a pruned simulation keeps its simulation_id: POST answers 409 with pruned_at and writes nothing, GET and cancel say it was pruned', async () => {
    expect((await postSimulation('reused-1', 'first-post')).status).toBe(202);
    expect((await postSimulation('kept-1')).status).toBe(202);
    // The run ended 31 days ago; the other one is still queued.
    await db()
      .updateTable('simulations')
      .set({ status: 'succeeded', finished_at: T - 31 * DAY })
      .where('id', '=', 'reused-1')
      .execute();
    clock.advance(HOUR);
    const prunedAt = new Date(T + HOUR).toISOString();
    expect(await prune(false)).toMatchObject({ status: 'succeeded', counts: { simulations: 1 } });
    expect(await db().selectFrom('simulations').select('id').execute()).toEqual([{ id: 'kept-1' }]);

    const again = await postSimulation('reused-1');
    expectProblemShape(again, 'simulation-exists', 409);
    expect(again.body).toMatchObject({ simulation: null, pruned_at: prunedAt });
    expect(again.body.detail).toContain('pruned');
    expect(again.headers.get('location')).toBeNull();
    // Nothing was written: no run, no outbox row, no job.
    expect(await db().selectFrom('simulations').select('id').where('id', '=', 'reused-1').execute()).toEqual(
      [],
    );
    expect(
      await db().selectFrom('outbox').select('id').where('job_id', '=', 'sim-reused-1').execute(),
    ).toHaveLength(1);
    // A retry of the first request still replays its 202 (the key is checked first).
    const replay = await postSimulation('reused-1', 'first-post');
    expect(replay.status).toBe(202);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');

    const got = await call(api, '/v1/simulations/reused-1', { key: api.keys.read });
    expectProblemShape(got, 'not-found', 404);
    expect(got.body.pruned_at).toBe(prunedAt);
    expect(got.body.detail).toContain('pruned');
    const cancelled = await call(api, '/v1/simulations/reused-1/cancel', {
      method: 'POST',
      key: api.keys.write,
    });
    expectProblemShape(cancelled, 'not-found', 404);
    expect(cancelled.body.pruned_at).toBe(prunedAt);
    const never = await call(api, '/v1/simulations/never-used', { key: api.keys.read });
    expectProblemShape(never, 'not-found', 404);
    expect(never.body.pruned_at).toBeUndefined();

    // The typed client surfaces the 409 itself: there is no run to compare with.
    const client = createClient({ baseUrl: api.url, apiKey: api.keys.write, retry: { attempts: 1 } });
    const err = await client
      .startSimulation({ simulation_id: 'reused-1', scenario: SCENARIO as never })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskyardProblemError);
    expect((err as TaskyardProblemError).slug).toBe('simulation-exists');
    expect((err as TaskyardProblemError).body.pruned_at).toBe(prunedAt);
  });

  it('a run without its simulation_ids row (made by an older version, or restored from an older archive into a migrated database) holds its id before and after pruning', async () => {
    await db()
      .insertInto('simulations')
      .values({
        id: 'legacy-1',
        status: 'succeeded',
        scenario: '{}',
        created_at: T - 40 * DAY,
        finished_at: T - 31 * DAY,
      })
      .execute();
    // Kept: a 409 with the run (it was a 500, a primary-key violation, before).
    const kept = await postSimulation('legacy-1');
    expectProblemShape(kept, 'simulation-exists', 409);
    expect(kept.body.simulation.simulation_id).toBe('legacy-1');
    expect(await db().selectFrom('simulation_ids').selectAll().execute()).toEqual([]);

    expect(await prune(false)).toMatchObject({ status: 'succeeded', counts: { simulations: 1 } });
    // Pruned: the id's row is written then, with the run's created_at.
    const ids = await db().selectFrom('simulation_ids').selectAll().execute();
    expect(ids.map((r) => [r.id, Number(r.created_at), Number(r.pruned_at)])).toEqual([
      ['legacy-1', T - 40 * DAY, T],
    ]);
    const pruned = await postSimulation('legacy-1');
    expectProblemShape(pruned, 'simulation-exists', 409);
    expect(pruned.body).toMatchObject({ simulation: null, pruned_at: clock.now().toISOString() });
    expect(await db().selectFrom('simulations').select('id').execute()).toEqual([]);
  });

  it('2,700 expired records are deleted in 6 batches of PRUNE_BATCH (500), each reported as progress', async () => {
    await idem(2_700, T - HOUR);
    await idem(7, T + HOUR);
    const batches: Array<{ kind: PruneKind; rows: number }> = [];
    const r = await prune(false, { onBatch: (b) => void batches.push(b) });
    expect(PRUNE_BATCH).toBeLessThanOrEqual(1000);
    expect(batches).toEqual([
      ...Array.from({ length: 5 }, () => ({ kind: 'idempotency_keys', rows: PRUNE_BATCH })),
      { kind: 'idempotency_keys', rows: 200 },
    ]);
    expect(r).toMatchObject({ status: 'succeeded', counts: { idempotency_keys: 2_700 } });
    expect(await countRows('idempotency_keys')).toBe(7);
  });

  it('an interrupted run keeps whole batches; its retry and a later run finish with exact counts', async () => {
    await idem(2_500, T - HOUR);
    await idem(3, T + HOUR);
    const runId = await newRun();
    const controller = new AbortController();
    const batches: number[] = [];
    const interrupted = runPruning(
      deps({
        onBatch: (b) => {
          batches.push(b.rows);
          controller.abort(new Error('interrupted after the first batch'));
        },
      }),
      { runId, dryRun: false, logger: api.logger, signal: controller.signal, finalAttempt: false },
    );
    await expect(interrupted).rejects.toThrow('interrupted after the first batch');
    expect(batches).toEqual([PRUNE_BATCH]);
    expect(await countRows('idempotency_keys')).toBe(2_503 - PRUNE_BATCH);
    const mid = await runRow(runId);
    expect(mid.status).toBe('running');
    expect(JSON.parse(mid.counts!)).toMatchObject({ idempotency_keys: PRUNE_BATCH });

    // More rows expire meanwhile; the retry of the same run continues from its stored counts.
    await idem(200, T);
    const retried = await runPruning(deps(), { runId, dryRun: false, logger: api.logger });
    expect(retried).toMatchObject({ status: 'succeeded', counts: { idempotency_keys: 2_700 } });
    expect(await countRows('idempotency_keys')).toBe(3);

    clock.advance(HOUR);
    const next = await prune();
    expect(next).toMatchObject({ status: 'succeeded', counts: { idempotency_keys: 3 } });
    expect(await countRows('idempotency_keys')).toBe(0);
  });

  it('a run left running by a holder that is gone is marked failed by the next run to take the lock, once', async () => {
    // A scheduled run whose tick failed while the database was away: its last write was lost.
    const leftId = await newRun();
    await db()
      .updateTable('pruning_runs')
      .set({ status: 'running', fence: 0, started_at: clock.now().getTime() })
      .where('id', '=', leftId)
      .execute();
    const next = await prune();
    expect(next).toMatchObject({ status: 'succeeded' });
    const left = await runRow(leftId);
    expect(left.status).toBe('failed');
    expect(left.error).toBe(ABANDONED_RUN_ERROR);
    expect(
      api.logs.filter(
        (l) => l.includes('earlier pruning runs left running were marked failed') && l.includes(leftId),
      ),
    ).toHaveLength(1);
    // Queued runs wait their turn; only running ones are abandoned.
    const queued = await newRun();
    await prune();
    expect((await runRow(queued)).status).toBe('queued');
  });

  it('a run that finds the pruning scope busy is recorded skipped at once, and the backups part waits for no backup', async () => {
    await idem(5, T - 1);
    await seedAll();
    const held = startGate();
    const release = startGate();
    const holder = locks.withSingleRunner('pruning', async () => {
      held.open();
      await release.wait();
    });
    await held.wait();
    const skipped = await prune();
    expect(skipped.status).toBe('skipped');
    const row = await runRow(skipped.run_id);
    expect(row).toMatchObject({ status: 'skipped', counts: null, started_at: null });
    expect(Number(row.finished_at)).toBe(T);
    expect(await countRows('idempotency_keys')).toBe(11);
    release.open();
    await holder;

    // Now a backup holds `backups`: retention is left for the next run, everything else goes.
    const backupHeld = startGate();
    const backupRelease = startGate();
    const backup = locks.withSingleRunner('backups', async () => {
      backupHeld.open();
      await backupRelease.wait();
    });
    await backupHeld.wait();
    const files = fs.readdirSync(backupDir).sort();
    const r = await prune();
    backupRelease.open();
    await backup;
    expect(r).toMatchObject({
      status: 'succeeded',
      counts: { idempotency_keys: 9, backups: 0, backup_files: 0 },
    });
    expect(fs.readdirSync(backupDir).sort()).toEqual(files);
    expect(await countRows('backups')).toBe(5);
    expect(await prune()).toMatchObject({ counts: { backups: 2, backup_files: 2, idempotency_keys: 0 } });
  });

  it('POST /v1/pruning/runs answers 202 with Location, the worker runs it, and GET shows its counts', async () => {
    await idem(4, T - 1);
    const conn = createRedis(api.config.REDIS_URL, 'client');
    const runtime = createWorkerRuntime({
      config: api.config,
      logger: api.logger,
      queues: [pruningQueue],
      registry: buildRegistry({
        pruning: createPruningProcessors(
          deps({ locks: createLocks({ redis: conn, prefix: api.prefix, logger: api.logger }) }),
        ),
      }),
    });
    cleanups.push(async () => {
      await runtime.stop();
      await conn.quit();
    });
    const post = (key: string, body: unknown) =>
      call(api, '/v1/pruning/runs', {
        method: 'POST',
        key: api.keys.write,
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify(body),
      });
    const get = (id: string) => call(api, `/v1/pruning/runs/${id}`, { key: api.keys.read });

    expectProblemShape(await post('bad', { dry_run: 'yes' }), 'validation-failed', 400);
    expectProblemShape(await post('bad-2', { dry_run: true, extra: 1 }), 'validation-failed', 400);
    expectProblemShape(
      await call(api, '/v1/pruning/runs', {
        method: 'POST',
        key: api.keys.read,
        headers: { 'idempotency-key': 'r' },
      }),
      'forbidden',
      403,
    );
    expectProblemShape(await get(randomUUID()), 'not-found', 404);

    const dry = await post('dry-1', { dry_run: true });
    expect(dry.status).toBe(202);
    expect(dry.headers.get('location')).toBe(`/v1/pruning/runs/${dry.body.id}`);
    expect(dry.body).toMatchObject({
      status: 'queued',
      trigger: 'manual',
      dry_run: true,
      counts: null,
      job_id: `prune-${dry.body.id}`,
    });
    const replay = await post('dry-1', { dry_run: true });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body.id).toBe(dry.body.id);

    await runtime.start();
    const finished = (id: string) =>
      waitFor(
        async () => {
          const b = (await get(id)).body;
          return b.status === 'succeeded' || b.status === 'failed' ? b : undefined;
        },
        { timeoutMs: 20_000, what: `pruning run ${id} finished` },
      );
    const dryDone = await finished(dry.body.id);
    expect(dryDone).toMatchObject({ status: 'succeeded', dry_run: true, error: null });
    expect(dryDone.counts).toEqual({ ...emptyPruneCounts(), idempotency_keys: 4 });
    expect(await countRows('idempotency_keys')).toBe(4 + 1); // + the dry run POST's own record

    const real = await post('real-1', {});
    expect(real.status).toBe(202);
    const done = await finished(real.body.id);
    expect(done).toMatchObject({ status: 'succeeded', trigger: 'manual', dry_run: false, error: null });
    expect(done.counts.idempotency_keys).toBe(4);
    expect(done.started_at).toBe(new Date(T).toISOString());
    expect(done.finished_at).toBe(new Date(T).toISOString());
    expect(await countRows('idempotency_keys')).toBe(2);

    // The list: newest first, paged by cursor, both runs exactly once however it is paged.
    const all = await allPages(api, '/v1/pruning/runs', api.keys.read, 100);
    const ids = all.map((r) => r.id);
    expect(ids).toEqual(expect.arrayContaining([dry.body.id, real.body.id]));
    expect(new Set(ids).size).toBe(ids.length);
    expect((await allPages(api, '/v1/pruning/runs', api.keys.read, 1)).map((r) => r.id)).toEqual(ids);
    expectProblemShape(
      await call(api, '/v1/pruning/runs?cursor=not-a-cursor', { key: api.keys.read }),
      'validation-failed',
      400,
    );
    // A well-formed cursor holding an id no list issues (a NUL byte Postgres refuses in text).
    const forged = Buffer.from(JSON.stringify([T, 'a\u0000b'])).toString('base64url');
    expectProblemShape(
      await call(api, `/v1/pruning/runs?cursor=${forged}`, { key: api.keys.read }),
      'validation-failed',
      400,
    );
    expectProblemShape(
      await call(api, '/v1/pruning/runs?limit=101', { key: api.keys.read }),
      'validation-failed',
      400,
    );
  });
});
