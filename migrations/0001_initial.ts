import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * The first tables: API keys, idempotency records, the outbox and settings.
 * Timestamps are epoch milliseconds (`bigint`). Primary-key columns are declared NOT NULL
 * because SQLite, unlike Postgres, would otherwise accept NULL in a non-INTEGER primary key.
 * Unique columns get an explicit unique index rather than a UNIQUE constraint, so the index
 * has the same readable name on both dialects (SQLite names constraint indexes itself).
 *
 * Applied migrations are never edited: their checksum is recorded. Add a new file instead.
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('api_keys')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('key_hash', 'text', (c) => c.notNull())
    .addColumn('scopes', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('revoked_at', 'bigint')
    .addColumn('last_used_at', 'bigint')
    .addPrimaryKeyConstraint('api_keys_pkey', ['id'])
    .execute();
  await db.schema
    .createIndex('api_keys_key_hash_unique')
    .on('api_keys')
    .column('key_hash')
    .unique()
    .execute();

  await db.schema
    .createTable('idempotency_keys')
    .addColumn('principal_id', 'text', (c) => c.notNull())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('fingerprint', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('in_flight', 'completed')`))
    .addColumn('claim_token', 'text', (c) => c.notNull())
    .addColumn('lease_expires_at', 'bigint')
    .addColumn('response_status', 'integer')
    .addColumn('response_body', 'text')
    .addColumn('response_location', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('idempotency_keys_pkey', ['principal_id', 'key'])
    .execute();
  // Pruning deletes expired records by this column.
  await db.schema
    .createIndex('idempotency_keys_expires_at_idx')
    .on('idempotency_keys')
    .column('expires_at')
    .execute();

  await db.schema
    .createTable('outbox')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('queue', 'text', (c) => c.notNull())
    .addColumn('job_name', 'text', (c) => c.notNull())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('dispatched_at', 'bigint')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .addPrimaryKeyConstraint('outbox_pkey', ['id'])
    .execute();
  // The relay's scan: undispatched rows (dispatched_at IS NULL), oldest first.
  await db.schema
    .createIndex('outbox_dispatched_at_created_at_idx')
    .on('outbox')
    .columns(['dispatched_at', 'created_at'])
    .execute();

  await db.schema
    .createTable('settings')
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('settings_pkey', ['key'])
    .execute();
}
