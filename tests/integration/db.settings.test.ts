import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { migrateToLatest } from '../../shared/db/migrate';
import { getSetting, putSetting } from '../../shared/db/settings';
import { BACKENDS, startGate } from '../helpers/services';

async function dropTestDatabase(handle: DatabaseHandle, url: string): Promise<void> {
  if (handle.dialect === 'postgres') {
    const schema = new URL(url).searchParams.get('schema');
    if (schema !== null) await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(handle.db);
  }
  await handle.close();
  if (url.startsWith('sqlite:'))
    fs.rmSync(path.dirname(url.slice('sqlite:'.length)), { recursive: true, force: true });
}

describe.each(BACKENDS)('settings on $backend', ({ makeUrl }) => {
  const url = makeUrl('settings');
  let handle: DatabaseHandle;

  beforeAll(async () => {
    handle = await createDatabase(url);
    await migrateToLatest(handle, await loadMigrations());
  });

  afterAll(async () => {
    await dropTestDatabase(handle, url);
  });

  it('a setting never written reads as undefined', async () => {
    expect(await getSetting(handle.db, 'absent')).toBeUndefined();
  });

  it('a put value reads back as the same JSON, and a second put replaces it', async () => {
    const first = { every_ms: 30_000, enabled: true, nested: { list: [1, 'two', null] } };
    await putSetting(handle.db, 'schedule:probes', first, 1000);
    expect(await getSetting(handle.db, 'schedule:probes')).toEqual(first);

    await putSetting(handle.db, 'schedule:probes', { cron: '0 * * * *', enabled: false }, 2000);
    expect(await getSetting(handle.db, 'schedule:probes')).toEqual({ cron: '0 * * * *', enabled: false });

    const rows = await handle.db
      .selectFrom('settings')
      .selectAll()
      .where('key', '=', 'schedule:probes')
      .execute();
    expect(rows).toEqual([
      { key: 'schedule:probes', value: '{"cron":"0 * * * *","enabled":false}', updated_at: 2000 },
    ]);
  });

  it('falsy JSON values round-trip', async () => {
    for (const value of [0, false, '', null]) {
      await putSetting(handle.db, 'falsy', value, 1);
      expect(await getSetting(handle.db, 'falsy')).toBe(value);
    }
  });

  it('a value without a JSON form is refused', async () => {
    await expect(putSetting(handle.db, 'nothing', undefined, 1)).rejects.toThrow('no JSON form');
    expect(await getSetting(handle.db, 'nothing')).toBeUndefined();
  });

  it('concurrent puts of one key end with one row holding one of the values', async () => {
    const gate = startGate();
    const writers = Array.from({ length: 20 }, async (_, i) => {
      await gate.wait();
      await putSetting(handle.db, 'contended', { writer: i }, 5000 + i);
    });
    gate.open();
    await Promise.all(writers);

    const rows = await handle.db.selectFrom('settings').selectAll().where('key', '=', 'contended').execute();
    expect(rows).toHaveLength(1);
    const value = await getSetting<{ writer: number }>(handle.db, 'contended');
    expect(rows[0]!.updated_at).toBe(5000 + value!.writer);
  });
});
