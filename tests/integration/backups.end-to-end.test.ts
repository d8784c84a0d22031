import { createHash, randomUUID } from 'node:crypto';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { backupJobId } from '../../queues/backup-producer';
import { backupsQueue } from '../../queues/backups';
import { BACKENDS, waitFor } from '../helpers/services';
import { startInProcessWorker } from '../helpers/worker-harness';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

/**
 * POST /v1/backups → outbox → BullMQ → create-backup under the `backups` lock → archive on
 * disk → manifest; download, verify and retention; in-process api and worker runtimes on
 * real Redis and each database.
 */
describe.each(BACKENDS)('backups end to end ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let backupDir: string;
  const workers: Array<{ stop(): Promise<void> }> = [];

  async function startWorker() {
    const worker = await startInProcessWorker(api, [backupsQueue]);
    workers.push(worker);
    return worker;
  }

  beforeAll(async () => {
    backupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-backups-'));
    api = await startApi({
      databaseUrl: makeUrl('backups'),
      env: { BACKUP_DIR: backupDir, BACKUP_KEEP_LAST: '2' },
    });
  });
  afterAll(async () => {
    for (const w of workers) await w.stop().catch(() => undefined);
    await api?.close();
    fs.rmSync(backupDir, { recursive: true, force: true });
  });

  const post = (key: string, body: unknown = {}) =>
    call(api, '/v1/backups', {
      method: 'POST',
      key: api.keys.write,
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify(body),
    });
  const get = (id: string) => call(api, `/v1/backups/${id}`, { key: api.keys.read });
  const settled = async (id: string) =>
    waitFor(
      async () => {
        const r = await get(id);
        // A 404 is final: polling on would only hide the cause behind the timeout.
        if (r.status === 404) return { gone: true as const };
        return r.body.status === 'succeeded' || r.body.status === 'failed' ? r.body : undefined;
      },
      { timeoutMs: 30_000, what: `backup ${id} finished` },
    ).then((r) => {
      if ('gone' in r) throw new Error(`backup ${id} disappeared (404) before it was seen finished`);
      return r;
    });

  it('a download the client abandons half-way is logged at info, not as a failed request', async () => {
    // An archive far larger than the socket buffers, so the client leaves mid-stream.
    const id = randomUUID();
    const fileName = `taskyard-backup-${id}.ndjson.gz`;
    fs.writeFileSync(path.join(backupDir, fileName), Buffer.alloc(32 * 1024 * 1024, 7));
    await api.db.db
      .insertInto('backups')
      .values({
        id,
        label: 'big',
        status: 'succeeded',
        trigger: 'manual',
        file_name: fileName,
        created_at: 1,
        finished_at: 1,
      })
      .execute();
    const before = api.logs.length;
    await new Promise<void>((resolve, reject) => {
      const req = http.get(
        `${api.url}/v1/backups/${id}/download`,
        { headers: { authorization: `Bearer ${api.keys.admin}` } },
        (res) => {
          expect(res.statusCode).toBe(200);
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        },
      );
      req.on('error', (err) => {
        if (!req.destroyed) reject(err);
      });
    });
    const lines = () => api.logs.slice(before).map((l) => JSON.parse(l) as { level: number; msg: string });
    await waitFor(() => lines().some((l) => l.msg === 'backup download ended by the client before the end'), {
      what: 'the abandoned-download line',
    });
    expect(lines().filter((l) => l.level >= 50)).toEqual([]);
    await api.db.db.deleteFrom('backups').where('id', '=', id).execute();
    fs.rmSync(path.join(backupDir, fileName));
  });

  it('an archive changed on disk is not served whole: another size is 409, other bytes cut the download short', async () => {
    const id = randomUUID();
    const fileName = `taskyard-backup-${id}.ndjson.gz`;
    const file = path.join(backupDir, fileName);
    // Several chunks of the file stream, so the check cannot ride on a single read.
    const content = Buffer.alloc(3 * 1024 * 1024, 5);
    const sha256 = createHash('sha256').update(content).digest('hex');
    fs.writeFileSync(file, content);
    await api.db.db
      .insertInto('backups')
      .values({
        id,
        label: 'damaged',
        status: 'succeeded',
        trigger: 'manual',
        file_name: fileName,
        size_bytes: content.length,
        sha256,
        created_at: 1,
        finished_at: 1,
      })
      .execute();
    const download = () =>
      fetch(`${api.url}/v1/backups/${id}/download`, {
        headers: { authorization: `Bearer ${api.keys.admin}` },
      });
    try {
      const intact = await download();
      expect(intact.status).toBe(200);
      expect(intact.headers.get('repr-digest')).toBe(
        `sha-256=:${Buffer.from(sha256, 'hex').toString('base64')}:`,
      );
      expect(Buffer.from(await intact.arrayBuffer()).equals(content)).toBe(true);

      const before = api.logs.length;
      const flipped = Buffer.from(content);
      flipped[flipped.length - 10] = 6;
      fs.writeFileSync(file, flipped);
      const damaged = await download();
      expect(damaged.status).toBe(200);
      await expect(damaged.arrayBuffer()).rejects.toThrow();
      const lines = () => api.logs.slice(before).map((l) => JSON.parse(l) as { level: number; msg: string });
      await waitFor(
        () => lines().some((l) => l.msg === 'backup download aborted: the archive changed on disk'),
        {
          what: 'the aborted-download line',
        },
      );

      fs.writeFileSync(file, content.subarray(0, 1000));
      const truncated = await call(api, `/v1/backups/${id}/download`, { key: api.keys.admin });
      expectProblemShape(truncated, 'conflict', 409);
      expect(truncated.body.detail).toContain(
        `is 1000 bytes on disk, but the backup wrote ${content.length}`,
      );
    } finally {
      await api.db.db.deleteFrom('backups').where('id', '=', id).execute();
      fs.rmSync(file, { force: true });
    }
  });

  it('a requested backup is written, recorded with its manifest, and downloadable by an admin', async () => {
    await startWorker();
    const created = await post('e2e-1', { label: 'first' });
    expect(created.status).toBe(202);
    expect(created.body.status).toBe('queued');
    const done = await settled(created.body.id);
    expect(done.status).toBe('succeeded');
    expect(done.attempts).toBe(1);
    // The view names its job, and the jobs route finds it there.
    expect(done.job_id).toBe(`backup-${done.id}`);
    const job = await call(api, `/v1/jobs/backups/${done.job_id}`, { key: api.keys.read });
    expect(job.status).toBe(200);
    expect(job.body.state).toBe('completed');
    expect(done.row_counts.api_keys).toBe(4);
    expect(done.schema_version).toBe((await loadMigrations()).at(-1)!.name);

    const file = fs.readdirSync(backupDir).filter((n) => n.endsWith('.ndjson.gz'));
    expect(file).toHaveLength(1);
    const bytes = fs.readFileSync(path.join(backupDir, file[0]!));
    expect(bytes.length).toBe(done.size_bytes);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(done.sha256);

    expect((await call(api, `/v1/backups/${done.id}/download`, { key: api.keys.write })).status).toBe(403);
    const res = await fetch(`${api.url}/v1/backups/${done.id}/download`, {
      headers: { authorization: `Bearer ${api.keys.admin}` },
    });
    expect(res.status).toBe(200);
    const downloaded = Buffer.from(await res.arrayBuffer());
    expect(createHash('sha256').update(downloaded).digest('hex')).toBe(done.sha256);
  });

  it('verify runs a restore drill and records that it passed', async () => {
    const list = await call(api, '/v1/backups?limit=1', { key: api.keys.read });
    const id = list.body.items[0].id as string;
    const r = await call(api, `/v1/backups/${id}/verify`, {
      method: 'POST',
      key: api.keys.write,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'verify-1' },
      body: '{}',
    });
    expect(r.status).toBe(202);
    const verified = await waitFor(
      async () => {
        const b = (await get(id)).body;
        return b.verification.status === 'passed' || b.verification.status === 'failed' ? b : undefined;
      },
      { timeoutMs: 30_000, what: 'verification finished' },
    );
    expect(verified.verification).toMatchObject({ status: 'passed', error: null });
    expect(verified.verification.verified_at).toMatch(/Z$/);

    // A new verification shows its own outcome fields, not the previous run's.
    const again = await call(api, `/v1/backups/${id}/verify`, {
      method: 'POST',
      key: api.keys.write,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'verify-2' },
      body: '{}',
    });
    expect(again.status).toBe(202);
    expect(again.body.verification).toEqual({
      status: 'queued',
      verified_at: null,
      error: null,
      job_id: expect.stringMatching(new RegExp(`^verify-${id}-[0-9a-f-]{36}$`)),
    });
    await waitFor(async () => ((await get(id)).body.verification.status === 'passed' ? true : undefined), {
      timeoutMs: 30_000,
      what: 'second verification passed',
    });
  });

  it('two worker processes never run two backups at once, and retention keeps the newest 2 with their files', async () => {
    await startWorker();
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await post(`e2e-many-${i}`)).body.id);
    const queue = api.queues.get('backups');
    // The jobs, not the rows: a busy `backups` lock delays a job by 2 s, so backups can finish
    // in any order, and retention (keep 2) may delete a succeeded one before it is polled.
    for (const id of ids) {
      const r = await waitFor(
        async () => {
          // finishedOn and returnvalue are written together when the job finishes, so a
          // snapshot with finishedOn has its return value (getState alone could be newer).
          const job = await queue.getJob(backupJobId(id));
          if (!job?.finishedOn) return undefined;
          return { state: await job.getState(), value: job.returnvalue };
        },
        { timeoutMs: 30_000, what: `backup job ${id} finished` },
      );
      expect(r.state).toBe('completed');
      // A run, not a `{ skipped }` answer.
      expect(r.value).toMatchObject({ backup_id: id, sha256: expect.any(String) });
    }
    // Retention runs after the manifest is written, inside the same job: wait for the jobs.
    await waitFor(
      async () => {
        const c = await queue.getJobCounts('active', 'waiting', 'delayed');
        return c.active === 0 && c.waiting === 0 && c.delayed === 0;
      },
      { what: 'backup jobs finished' },
    );
    const rows = await api.db.db
      .selectFrom('backups')
      .selectAll()
      .where('status', '=', 'succeeded')
      .execute();
    // Never overlapping: each run started after the previous one finished.
    const spans = rows
      .map((r) => [Number(r.started_at), Number(r.finished_at)] as const)
      .sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i]![0]).toBeGreaterThanOrEqual(spans[i - 1]![1]);
    expect(rows).toHaveLength(2);
    const files = fs
      .readdirSync(backupDir)
      .filter((n) => n.endsWith('.ndjson.gz'))
      .sort();
    expect(files).toEqual(rows.map((r) => r.file_name).sort());
  });
});
