import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import {
  countActiveAdminKeys,
  ensureAdminKey,
  findActiveApiKeyByHash,
  generateApiKey,
  hashApiKey,
  insertApiKey,
  listApiKeys,
  revokeApiKey,
} from '../../shared/db/api-keys';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { migrateToLatest } from '../../shared/db/migrate';
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

describe.each(BACKENDS)('API keys on $backend', ({ makeUrl }) => {
  const url = makeUrl('api_keys');
  let handle: DatabaseHandle;
  const now = 1_767_225_600_000; // 2026-01-01T00:00:00Z

  beforeAll(async () => {
    handle = await createDatabase(url);
    await migrateToLatest(handle, await loadMigrations());
  });

  beforeEach(async () => {
    await handle.db.deleteFrom('api_keys').execute();
  });

  afterAll(async () => {
    await dropTestDatabase(handle, url);
  });

  it('an inserted key is found by the hash of its secret and stores only the hash', async () => {
    const key = generateApiKey();
    const record = await insertApiKey(handle.db, {
      name: 'ci',
      scopes: ['write', 'read'],
      keyHash: hashApiKey(key),
      now,
    });

    expect(record).toEqual({
      id: record.id,
      name: 'ci',
      scopes: ['read', 'write'],
      created_at: now,
      revoked_at: null,
    });
    expect(await findActiveApiKeyByHash(handle.db, hashApiKey(key))).toEqual(record);
    expect(await findActiveApiKeyByHash(handle.db, hashApiKey(`${key}x`))).toBeUndefined();
    expect(await findActiveApiKeyByHash(handle.db, 'not-a-hash')).toBeUndefined();

    const stored = await handle.db.selectFrom('api_keys').selectAll().execute();
    expect(stored).toHaveLength(1);
    expect(JSON.stringify(stored)).not.toContain(key);
    expect(stored[0]!.key_hash).toBe(hashApiKey(key));
    expect(typeof stored[0]!.created_at).toBe('number');
  });

  it('a revoked key is no longer found, and revoking twice reports false', async () => {
    const key = generateApiKey();
    const record = await insertApiKey(handle.db, {
      name: 'old',
      scopes: ['read'],
      keyHash: hashApiKey(key),
      now,
    });

    expect(await revokeApiKey(handle.db, record.id, now + 1)).toBe(true);
    expect(await revokeApiKey(handle.db, record.id, now + 2)).toBe(false);
    expect(await revokeApiKey(handle.db, 'no-such-id', now + 2)).toBe(false);

    expect(await findActiveApiKeyByHash(handle.db, hashApiKey(key))).toBeUndefined();
    expect(await listApiKeys(handle.db)).toEqual([{ ...record, revoked_at: now + 1 }]);
  });

  it('lists every key oldest first, revoked ones included', async () => {
    const a = await insertApiKey(handle.db, { name: 'a', scopes: ['read'], keyHash: hashApiKey('a'), now });
    const b = await insertApiKey(handle.db, {
      name: 'b',
      scopes: ['admin'],
      keyHash: hashApiKey('b'),
      now: now + 5,
    });
    await revokeApiKey(handle.db, a.id, now + 10);

    expect(await listApiKeys(handle.db)).toEqual([{ ...a, revoked_at: now + 10 }, b]);
  });

  it('the same hash cannot be stored twice', async () => {
    await insertApiKey(handle.db, { name: 'one', scopes: ['read'], keyHash: hashApiKey('same'), now });
    await expect(
      insertApiKey(handle.db, { name: 'two', scopes: ['read'], keyHash: hashApiKey('same'), now }),
    ).rejects.toThrow();
    expect(await listApiKeys(handle.db)).toHaveLength(1);
  });

  it('ensureAdminKey registers the key once: created, then not created', async () => {
    const key = generateApiKey();
    expect(await ensureAdminKey(handle.db, key, now)).toEqual({ created: true, revoked: false });
    expect(await ensureAdminKey(handle.db, key, now + 1)).toEqual({ created: false, revoked: false });

    const keys = await listApiKeys(handle.db);
    expect(keys).toEqual([
      { id: keys[0]!.id, name: 'bootstrap-admin', scopes: ['admin'], created_at: now, revoked_at: null },
    ]);
    expect((await findActiveApiKeyByHash(handle.db, hashApiKey(key)))?.scopes).toEqual(['admin']);
  });

  it('twenty concurrent ensureAdminKey calls create exactly one row', async () => {
    const key = generateApiKey();
    const gate = startGate();
    const racers = Array.from({ length: 20 }, async () => {
      await gate.wait();
      return ensureAdminKey(handle.db, key, now);
    });
    gate.open();
    const results = await Promise.all(racers);

    expect(results.filter((r) => r.created)).toHaveLength(1);
    const rows = await handle.db
      .selectFrom('api_keys')
      .select('id')
      .where('key_hash', '=', hashApiKey(key))
      .execute();
    expect(rows).toHaveLength(1);
  });

  it('a revoked bootstrap key stays revoked when ensured again, and says so', async () => {
    const key = generateApiKey();
    await ensureAdminKey(handle.db, key, now);
    const [record] = await listApiKeys(handle.db);
    await revokeApiKey(handle.db, record!.id, now + 1);

    expect(await ensureAdminKey(handle.db, key, now + 2)).toEqual({ created: false, revoked: true });
    expect(await findActiveApiKeyByHash(handle.db, hashApiKey(key))).toBeUndefined();
  });

  it('counts only unrevoked keys holding the admin scope', async () => {
    await ensureAdminKey(handle.db, generateApiKey(), now);
    const second = await insertApiKey(handle.db, {
      name: 'ops',
      scopes: ['read', 'admin'],
      keyHash: hashApiKey('ops'),
      now,
    });
    await insertApiKey(handle.db, {
      name: 'reader',
      scopes: ['read', 'write'],
      keyHash: hashApiKey('reader'),
      now,
    });
    expect(await countActiveAdminKeys(handle.db)).toBe(2);

    await revokeApiKey(handle.db, second.id, now + 1);
    expect(await countActiveAdminKeys(handle.db)).toBe(1);
  });

  it('rejects a key without scopes or with a malformed hash, storing nothing', async () => {
    await expect(
      insertApiKey(handle.db, { name: 'x', scopes: [], keyHash: hashApiKey('x'), now }),
    ).rejects.toThrow('at least one scope');
    await expect(
      insertApiKey(handle.db, { name: 'x', scopes: ['read'], keyHash: 'plain-key', now }),
    ).rejects.toThrow('SHA-256 hex');
    expect(await listApiKeys(handle.db)).toEqual([]);
  });
});
