import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../shared/clock';
import { insertOutboxRow, MARK_DISPATCHED_MAX_IDS, type OutboxRow } from '../../shared/db/outbox-store';
import { createLogger } from '../../shared/logger';
import { backupJobId } from '../../queues/backup-producer';
import { dispatchOutboxRow } from '../../queues/outbox-dispatch';
import { BACKENDS } from '../helpers/services';
import { startApi, type ApiUnderTest } from './api.harness';

/**
 * dispatchOutboxRow against real Redis and each database: the job is added under the row's
 * job id, and the row is marked dispatched; the marks of one event-loop turn go out together
 * (at most MARK_DISPATCHED_MAX_IDS per UPDATE), and each caller returns only once its mark
 * has committed. (600 rows also exercise the split: one UPDATE refuses more than 500 ids.)
 */
describe.each(BACKENDS)('outbox dispatch ($backend)', ({ backend, makeUrl }) => {
  let api: ApiUnderTest;
  const logger = createLogger({ level: 'silent' });

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('outbox') });
  });
  afterAll(async () => {
    await api?.close();
  });

  async function rows(n: number): Promise<OutboxRow[]> {
    const out: OutboxRow[] = [];
    for (let i = 0; i < n; i++) {
      const id = randomUUID();
      out.push(
        await insertOutboxRow(api.db.db, {
          queue: 'backups',
          jobName: 'create-backup',
          jobId: backupJobId(id),
          payload: { backup_id: id, trigger: 'manual' },
          now: Date.now(),
        }),
      );
    }
    return out;
  }
  const deps = () => ({ db: api.db.db, queues: api.queues, clock: systemClock, logger });
  const marks = async (ids: string[]) =>
    api.db.db
      .selectFrom('outbox')
      .select(['id', 'dispatched_at', 'attempts'])
      .where('id', 'in', ids)
      .execute();

  it(`${MARK_DISPATCHED_MAX_IDS + 100} rows dispatched at once: every job added once, every row marked once`, async () => {
    const batch = await rows(MARK_DISPATCHED_MAX_IDS + 100);
    const ids = batch.map((r) => r.id);
    const results = await Promise.all(batch.map((r) => dispatchOutboxRow(deps(), r)));
    expect(results.filter((r) => r === 'dispatched')).toHaveLength(batch.length);
    // Settled means marked: read straight after, no polling.
    const marked = await marks(ids);
    expect(marked).toHaveLength(batch.length);
    expect(marked.filter((m) => m.dispatched_at !== null && Number(m.attempts) === 1)).toHaveLength(
      batch.length,
    );
    const queue = api.queues.get('backups');
    const jobs = await Promise.all(batch.map((r) => queue.getJob(r.job_id)));
    expect(jobs.filter((j) => j !== undefined)).toHaveLength(batch.length);

    // Dispatching again (the relay after a lost mark) adds no job and does not re-mark.
    const before = await queue.getJobCounts('waiting', 'delayed', 'active', 'completed', 'failed');
    await Promise.all(batch.slice(0, 50).map((r) => dispatchOutboxRow(deps(), r)));
    expect(await queue.getJobCounts('waiting', 'delayed', 'active', 'completed', 'failed')).toEqual(before);
    const again = await marks(ids.slice(0, 50));
    expect(again.filter((m) => Number(m.attempts) === 1)).toHaveLength(50);
  });

  it('a mark that fails does not fail the dispatch: the job is in Redis and the row is left to the relay', async () => {
    const db = api.db.db;
    if (backend === 'sqlite') {
      await sql`create trigger refuse_mark before update of dispatched_at on outbox begin select raise(abort, 'marks refused'); end`.execute(
        db,
      );
    } else {
      await sql`create function refuse_mark() returns trigger language plpgsql as $$ begin raise exception 'marks refused'; end $$`.execute(
        db,
      );
      await sql`create trigger refuse_mark before update on outbox for each row execute function refuse_mark()`.execute(
        db,
      );
    }
    try {
      const [row] = await rows(1);
      expect(await dispatchOutboxRow(deps(), row!)).toBe('unmarked');
      expect(await api.queues.get('backups').getJob(row!.job_id)).toBeDefined();
      const [m] = await marks([row!.id]);
      expect(m!.dispatched_at).toBeNull();
    } finally {
      if (backend === 'sqlite') await sql`drop trigger refuse_mark`.execute(db);
      else {
        await sql`drop trigger refuse_mark on outbox`.execute(db);
        await sql`drop function refuse_mark()`.execute(db);
      }
    }
  });

  it('one row at a time (as the relay does) is marked before each call returns', async () => {
    for (const row of await rows(5)) {
      expect(await dispatchOutboxRow(deps(), row)).toBe('dispatched');
      const [m] = await marks([row.id]);
      expect(m!.dispatched_at).not.toBeNull();
    }
  });
});
