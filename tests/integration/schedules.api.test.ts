import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { backupsQueue } from '../../queues/backups';
import { BACKENDS, closedPort, waitFor } from '../helpers/services';
import { startInProcessWorker } from '../helpers/worker-harness';
import { call, expectProblemShape, startApi, type ApiUnderTest } from './api.harness';

describe.each(BACKENDS)('GET/PUT /v1/schedules ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let backupDir: string;
  let stopWorker: () => Promise<void> = async () => undefined;

  beforeAll(async () => {
    backupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-sched-'));
    api = await startApi({ databaseUrl: makeUrl('sched'), env: { BACKUP_DIR: backupDir } });
  });
  afterAll(async () => {
    await stopWorker();
    await api?.close();
    fs.rmSync(backupDir, { recursive: true, force: true });
  });

  const put = (name: string, body: unknown, key = api.keys.admin) =>
    call(api, `/v1/schedules/${name}`, {
      method: 'PUT',
      key,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('lists the backup and probes schedules with their default intervals', async () => {
    const r = await call(api, '/v1/schedules', { key: api.keys.read });
    expect(r.status).toBe(200);
    // Other features add their schedules to the list too: check ours are in it.
    expect(r.body.items).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          name: 'backup',
          queue: 'backups',
          enabled: true,
          every_ms: 86_400_000,
          cron: null,
        }),
        expect.objectContaining({
          name: 'probes',
          queue: 'probes',
          job: 'probe-cycle',
          enabled: true,
          every_ms: 30_000,
          cron: null,
        }),
      ]),
    );
  });

  it.each([
    ['both every_ms and cron', { every_ms: 5000, cron: '* * * * *' }],
    ['nothing to change', {}],
    ['every_ms below 1000', { every_ms: 999 }],
    ['a malformed cron', { cron: 'every day' }],
    ['a cron that never fires (30 February)', { cron: '0 3 30 2 *' }],
    ['a cron that never fires but parses (31 February or April)', { cron: '0 0 31 2,4 *' }],
    ['an unknown field', { every_ms: 5000, color: 'red' }],
    ['a string interval', { every_ms: '5000' }],
  ])('a body with %s gets 400 and changes nothing', async (_n, body) => {
    const r = await put('backup', body);
    expectProblemShape(r, 'validation-failed', 400);
    const g = await call(api, '/v1/schedules/backup', { key: api.keys.read });
    expect(g.body.every_ms).toBe(86_400_000);
  });

  it('a cron the scheduler cannot run is refused saying why', async () => {
    const r = await put('backup', { cron: '61 * * * *' });
    expectProblemShape(r, 'validation-failed', 400);
    expect(r.body.errors).toEqual([
      {
        path: 'body.cron',
        message: expect.stringMatching(/^cron cannot be scheduled: .*61.*expected range 0-59/),
      },
    ]);
  });

  it('{"enabled": false} alone turns a schedule off and keeps its interval; {"enabled": true} turns it back on', async () => {
    await put('probes', { every_ms: 40_000 });
    const off = await put('probes', { enabled: false });
    expect(off.status).toBe(200);
    expect(off.body).toMatchObject({
      name: 'probes',
      every_ms: 40_000,
      cron: null,
      enabled: false,
      in_redis: false,
    });
    const on = await put('probes', { enabled: true });
    expect(on.body).toMatchObject({ every_ms: 40_000, enabled: true, in_redis: true });
    expect((await put('probes', { every_ms: 30_000 })).body).toMatchObject({
      every_ms: 30_000,
      enabled: true,
    });
  });

  it('a PUT while Redis is down is stored and answered 200 with in_redis false, not a 503', async () => {
    const offline = await startApi({
      databaseUrl: makeUrl('sched_offline'),
      redisUrl: `redis://127.0.0.1:${await closedPort()}`,
    });
    try {
      const r = await call(offline, '/v1/schedules/probes', {
        method: 'PUT',
        key: offline.keys.admin,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ every_ms: 45_000, enabled: true }),
      });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({
        name: 'probes',
        every_ms: 45_000,
        enabled: true,
        in_redis: false,
        next_run_at: null,
      });
      const stored = await offline.db.db.selectFrom('settings').selectAll().execute();
      expect(JSON.stringify(stored)).toContain('45000');
    } finally {
      await offline.close();
    }
  });

  it('an unknown schedule is 404 naming the known ones; a write key gets 403', async () => {
    const r = await put('nightly', { every_ms: 5000 });
    expectProblemShape(r, 'not-found', 404);
    expect(r.body.schedules).toEqual(expect.arrayContaining(['backup', 'probes']));
    expectProblemShape(await put('backup', { every_ms: 5000 }, api.keys.write), 'forbidden', 403);
  });

  it('a 1 s schedule set through PUT takes effect without a restart: the next run moves and a scheduled backup runs', async () => {
    const worker = await startInProcessWorker(api, [backupsQueue]);
    stopWorker = () => worker.stop();

    const r = await put('backup', { every_ms: 1000 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ name: 'backup', every_ms: 1000, enabled: true, in_redis: true });
    const scheduled = () =>
      api.db.db
        .selectFrom('backups')
        .selectAll()
        .where('trigger', '=', 'scheduled')
        .where('status', '=', 'succeeded')
        .execute();
    // At least two runs: the one the new scheduler starts with, and one a second later.
    await waitFor(async () => (await scheduled()).length >= 2, {
      timeoutMs: 30_000,
      what: 'two scheduled backups',
    });
    const next = (await call(api, '/v1/schedules/backup', { key: api.keys.read })).body.next_run_at as string;
    expect(Date.parse(next) - Date.now()).toBeLessThan(5_000);

    const off = await put('backup', { every_ms: 1000, enabled: false });
    expect(off.body).toMatchObject({ enabled: false, in_redis: false, next_run_at: null });
    const cron = await put('backup', { cron: '0 3 * * *' });
    expect(cron.body).toMatchObject({ cron: '0 3 * * *', every_ms: null, in_redis: true });
    expect(new Date(cron.body.next_run_at as string).getUTCHours()).toBe(3);
  });
});
