import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { SCOPES, type Scope } from '../types';
import type { ApiKeysTable, Database } from './schema';

/**
 * API keys (DESIGN.md §8): stored only as SHA-256 hashes, looked up by hash and compared in
 * constant time. A revoked key stays in the table (revoked_at set) and never authenticates.
 */

export interface ApiKeyRecord {
  id: string;
  name: string;
  scopes: Scope[];
  created_at: number;
  revoked_at: number | null;
}

/** Name of the key registered from TASKYARD_ADMIN_KEY. */
export const BOOTSTRAP_ADMIN_KEY_NAME = 'bootstrap-admin';

const KEY_HASH = /^[0-9a-f]{64}$/;

/** A new secret key: `ty_` + 32 random bytes, base64url (256 bits of entropy). */
export function generateApiKey(): string {
  return `ty_${randomBytes(32).toString('base64url')}`;
}

/** SHA-256 hex of a key: what the database stores and looks up. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** Store a new key (by hash) and return its record. @throws the unique violation when the hash exists. */
export async function insertApiKey(
  db: Kysely<Database>,
  a: { name: string; scopes: Scope[]; keyHash: string; now: number },
): Promise<ApiKeyRecord> {
  assertKeyHash(a.keyHash);
  const row = {
    id: randomUUID(),
    name: a.name,
    key_hash: a.keyHash,
    scopes: formatScopes(a.scopes),
    created_at: a.now,
    revoked_at: null,
    last_used_at: null,
  };
  await db.insertInto('api_keys').values(row).execute();
  return toRecord(row);
}

/**
 * The unrevoked key with this hash. Found through the unique index, then confirmed with a
 * constant-time comparison of the stored and the computed hash.
 */
export async function findActiveApiKeyByHash(
  db: Kysely<Database>,
  keyHash: string,
): Promise<ApiKeyRecord | undefined> {
  if (!KEY_HASH.test(keyHash)) return undefined;
  const row = await db
    .selectFrom('api_keys')
    .selectAll()
    .where('key_hash', '=', keyHash)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  const stored = Buffer.from(row.key_hash, 'hex');
  const given = Buffer.from(keyHash, 'hex');
  if (stored.length !== given.length || !timingSafeEqual(stored, given)) return undefined;
  return toRecord(row);
}

/** Every key, revoked ones included, oldest first. Never includes hashes. */
export async function listApiKeys(db: Kysely<Database>): Promise<ApiKeyRecord[]> {
  const rows = await db
    .selectFrom('api_keys')
    .select(['id', 'name', 'scopes', 'created_at', 'revoked_at'])
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map(toRecord);
}

/** Revoke a key. @returns false when no unrevoked key has this id. */
export async function revokeApiKey(db: Kysely<Database>, id: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable('api_keys')
    .set({ revoked_at: now })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

/**
 * Register the bootstrap admin key if its hash is absent (INSERT … ON CONFLICT DO NOTHING, so
 * concurrent starts register it once). A key that was registered and later revoked stays revoked.
 */
export async function ensureAdminKey(
  db: Kysely<Database>,
  key: string,
  now: number,
): Promise<{ created: boolean; revoked: boolean }> {
  const r = await db
    .insertInto('api_keys')
    .values({
      id: randomUUID(),
      name: BOOTSTRAP_ADMIN_KEY_NAME,
      key_hash: hashApiKey(key),
      scopes: formatScopes(['admin']),
      created_at: now,
      revoked_at: null,
      last_used_at: null,
    })
    .onConflict((oc) => oc.column('key_hash').doNothing())
    .executeTakeFirst();
  const created = (r.numInsertedOrUpdatedRows ?? 0n) > 0n;
  if (created) return { created, revoked: false };
  // Already there: say whether it still works, so a revoked key is not reported as in place.
  const existing = await db
    .selectFrom('api_keys')
    .select('revoked_at')
    .where('key_hash', '=', hashApiKey(key))
    .executeTakeFirst();
  return { created, revoked: existing?.revoked_at !== null && existing?.revoked_at !== undefined };
}

/** Unrevoked keys holding the `admin` scope. */
export async function countActiveAdminKeys(db: Kysely<Database>): Promise<number> {
  const rows = await db.selectFrom('api_keys').select('scopes').where('revoked_at', 'is', null).execute();
  return rows.filter((r) => parseScopes(r.scopes).includes('admin')).length;
}

function assertKeyHash(keyHash: string): void {
  if (!KEY_HASH.test(keyHash)) throw new TypeError('keyHash must be a SHA-256 hex digest (see hashApiKey)');
}

function formatScopes(scopes: readonly Scope[]): string {
  if (scopes.length === 0) throw new TypeError('an API key needs at least one scope');
  const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (unknown.length > 0)
    throw new TypeError(`unknown scope(s) ${unknown.join(', ')}; use ${SCOPES.join(', ')}`);
  // Canonical order, no duplicates: the column reads the same however the key was made.
  return SCOPES.filter((s) => scopes.includes(s)).join(',');
}

function parseScopes(value: string): Scope[] {
  const parts = value.split(',');
  return SCOPES.filter((s) => parts.includes(s));
}

function toRecord(
  row: Pick<Selectable<ApiKeysTable>, 'id' | 'name' | 'scopes' | 'created_at' | 'revoked_at'>,
): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    scopes: parseScopes(row.scopes),
    created_at: Number(row.created_at),
    revoked_at: row.revoked_at === null ? null : Number(row.revoked_at),
  };
}
