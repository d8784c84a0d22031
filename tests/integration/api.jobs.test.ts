import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobResponseSchema } from '../../shared/contract/jobs';
import { createRedis } from '../../shared/redis';
import { testRedisUrl, testSqliteUrl, waitFor } from '../helpers/services';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

// Job state lives in Redis only: one backend is enough.
describe('GET /v1/jobs/:queue/:jobId', () => {
  let api: ApiUnderTest;
  beforeAll(async () => {
    api = await startApi({ databaseUrl: testSqliteUrl('api_jobs') });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('a waiting job is shown with its state, name, attempts and RFC 3339 timestamps', async () => {
    await api.queues.add('noop', 'noop', { seq: 1 }, 'job-waiting');
    const r = await call(api, '/v1/jobs/noop/job-waiting', { key: api.keys.read });
    expect(r.status).toBe(200);
    const job = jobResponseSchema.parse(r.body);
    expect(job).toMatchObject({
      queue: 'noop',
      id: 'job-waiting',
      name: 'noop',
      state: 'waiting',
      attempts_made: 0,
      attempts_max: 5,
      failed_reason: null,
      processed_at: null,
      finished_at: null,
    });
  });

  it('completed and failed jobs show their return value and failure reason', async () => {
    await api.queues.add('noop', 'noop', { seq: 2 }, 'job-ok');
    await api.queues.add('noop', 'noop', { seq: 3 }, 'job-bad', { attempts: 1 });
    const connection = createRedis(testRedisUrl(), 'worker');
    const worker = new Worker(
      'noop',
      async (job) => {
        if (job.id === 'job-bad') throw new Error('deliberate failure');
        await job.updateProgress(100);
        return { echoed: job.data.seq };
      },
      { connection, prefix: api.prefix },
    );
    try {
      const done = await waitFor(
        async () => {
          const ok = await call(api, '/v1/jobs/noop/job-ok', { key: api.keys.read });
          const bad = await call(api, '/v1/jobs/noop/job-bad', { key: api.keys.read });
          return ok.body.state === 'completed' && bad.body.state === 'failed' ? { ok, bad } : undefined;
        },
        { what: 'both jobs finished' },
      );
      const ok = jobResponseSchema.parse(done.ok.body);
      expect(ok.returnvalue).toEqual({ echoed: 2 });
      expect(ok.progress).toBe(100);
      expect(ok.attempts_made).toBe(1);
      expect(ok.processed_at).not.toBeNull();
      expect(ok.finished_at).not.toBeNull();
      const bad = jobResponseSchema.parse(done.bad.body);
      expect(bad.failed_reason).toBe('deliberate failure');
      expect(bad.attempts_made).toBe(1);
    } finally {
      await worker.close();
      await connection.quit();
    }
  });

  it('a delayed job says when it becomes due', async () => {
    await api.queues.add('noop', 'noop', {}, 'job-delayed', { delay: 60_000 });
    const r = await call(api, '/v1/jobs/noop/job-delayed', { key: api.keys.read });
    const job = jobResponseSchema.parse(r.body);
    expect(job.state).toBe('delayed');
    expect(Date.parse(job.delayed_until!) - Date.parse(job.created_at)).toBe(60_000);
  });

  it('an unknown queue gets 404 naming the known queues', async () => {
    const r = await call(api, '/v1/jobs/nope/1', { key: api.keys.read });
    expectProblemShape(r, 'not-found', 404);
    expect(r.body.known_queues).toEqual([...api.queues.byName.keys()]);
    expect(r.body.detail).toContain('backups');
  });

  it('an unknown job gets 404', async () => {
    const r = await call(api, '/v1/jobs/noop/never-added', { key: api.keys.read });
    expectProblemShape(r, 'not-found', 404);
    expect(r.body.detail).toContain('never-added');
    // The queue exists: listing the known queues would suggest it did not.
    expect(r.body.known_queues).toBeUndefined();
  });

  it("ids that name BullMQ's own keys get 404, not a 503 that blames Redis", async () => {
    // Make sure the queue's own keys exist: `id` (string), `events` (stream), `wait` (list),
    // `marker` (sorted set), and a job's `:logs` list.
    await api.queues.add('noop', 'noop', {}, 'job-with-logs');
    const noop = api.queues.byName.get('noop')!;
    await (await noop.getJob('job-with-logs'))!.log('a line');
    for (const id of ['id', 'events', 'wait', 'marker', 'job-with-logs:logs']) {
      const r = await call(api, `/v1/jobs/noop/${encodeURIComponent(id)}`, { key: api.keys.read });
      expectProblemShape(r, 'not-found', 404);
    }
  });

  it('a percent-encoded job id is decoded before the lookup', async () => {
    await api.queues.add('noop', 'noop', {}, 'job with spaces/and-slash');
    const r = await call(api, `/v1/jobs/noop/${encodeURIComponent('job with spaces/and-slash')}`, {
      key: api.keys.read,
    });
    expect(r.status).toBe(200);
    expect(r.body.id).toBe('job with spaces/and-slash');
  });
});
