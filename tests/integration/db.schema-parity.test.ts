import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { migrateToLatest } from '../../shared/db/migrate';
import { testPostgresUrl, testSqliteUrl } from '../helpers/services';

/**
 * One migration source, two dialects: after migrating, both databases must have the same
 * tables, columns (declared type, nullability), primary keys and named indexes.
 */

interface Column {
  name: string;
  type: string;
  nullable: boolean;
}
interface Index {
  name: string;
  columns: string[];
  unique: boolean;
}
interface Table {
  columns: Column[];
  primaryKey: string[];
  indexes: Index[];
}
type Schema = Record<string, Table>;

async function introspectSqlite(handle: DatabaseHandle): Promise<Schema> {
  const schema: Schema = {};
  const tables = await sql<{
    name: string;
  }>`select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name`.execute(
    handle.db,
  );
  for (const { name: table } of tables.rows) {
    const info = await sql<{
      name: string;
      type: string;
      notnull: number;
      pk: number;
    }>`select * from pragma_table_info(${table}) order by cid`.execute(handle.db);
    const list = await sql<{
      name: string;
      unique: number;
      origin: string;
    }>`select * from pragma_index_list(${table})`.execute(handle.db);
    const indexes: Index[] = [];
    // The primary key's own index is compared as primaryKey; SQLite names it sqlite_autoindex_*.
    for (const ix of list.rows.filter((i) => i.origin !== 'pk')) {
      const cols = await sql<{
        name: string;
      }>`select name from pragma_index_info(${ix.name}) order by seqno`.execute(handle.db);
      indexes.push({ name: ix.name, columns: cols.rows.map((c) => c.name), unique: ix.unique === 1 });
    }
    schema[table] = {
      columns: info.rows.map((c) => ({
        name: c.name,
        type: c.type.toLowerCase(),
        nullable: c.notnull === 0,
      })),
      primaryKey: info.rows
        .filter((c) => c.pk > 0)
        .sort((a, b) => a.pk - b.pk)
        .map((c) => c.name),
      indexes: indexes.sort((a, b) => a.name.localeCompare(b.name)),
    };
  }
  return schema;
}

async function introspectPostgres(handle: DatabaseHandle): Promise<Schema> {
  const schema: Schema = {};
  const columns = await sql<{
    table_name: string;
    column_name: string;
    data_type: string;
    is_nullable: string;
  }>`select table_name, column_name, data_type, is_nullable
       from information_schema.columns
      where table_schema = current_schema()
      order by table_name, ordinal_position`.execute(handle.db);
  for (const c of columns.rows) {
    const table = (schema[c.table_name] ??= { columns: [], primaryKey: [], indexes: [] });
    table.columns.push({ name: c.column_name, type: c.data_type, nullable: c.is_nullable === 'YES' });
  }
  const indexes = await sql<{
    table_name: string;
    index_name: string;
    is_unique: boolean;
    is_primary: boolean;
    columns: string[];
  }>`select t.relname::text as table_name, i.relname::text as index_name,
            ix.indisunique as is_unique, ix.indisprimary as is_primary,
            array(select a.attname::text
                    from unnest(ix.indkey::int2[]) with ordinality as k(attnum, ord)
                    join pg_attribute a on a.attrelid = t.oid and a.attnum = k.attnum
                   order by k.ord) as columns
       from pg_index ix
       join pg_class i on i.oid = ix.indexrelid
       join pg_class t on t.oid = ix.indrelid
       join pg_namespace n on n.oid = t.relnamespace
      where n.nspname = current_schema()
      order by i.relname`.execute(handle.db);
  for (const ix of indexes.rows) {
    const table = schema[ix.table_name];
    if (table === undefined) throw new Error(`index ${ix.index_name} on unknown table ${ix.table_name}`);
    if (ix.is_primary) table.primaryKey = ix.columns;
    else table.indexes.push({ name: ix.index_name, columns: ix.columns, unique: ix.is_unique });
  }
  return schema;
}

describe('schema parity between SQLite and Postgres', () => {
  const handles: DatabaseHandle[] = [];
  const sqliteUrl = testSqliteUrl('parity');
  const postgresUrl = testPostgresUrl('parity');
  const sqliteOnlyUrl = testSqliteUrl('parity-pk');

  afterAll(async () => {
    for (const h of handles) {
      if (h.dialect === 'postgres') {
        const name = new URL(postgresUrl).searchParams.get('schema')!;
        await sql`drop schema if exists ${sql.id(name)} cascade`.execute(h.db);
      }
      await h.close();
    }
    for (const url of [sqliteUrl, sqliteOnlyUrl]) {
      fs.rmSync(path.dirname(url.slice('sqlite:'.length)), { recursive: true, force: true });
    }
  });

  it('both dialects have the same tables, columns, primary keys and indexes after migrating', async () => {
    const migrations = await loadMigrations();
    const sqlite = await createDatabase(sqliteUrl);
    handles.push(sqlite);
    const postgres = await createDatabase(postgresUrl);
    handles.push(postgres);
    await migrateToLatest(sqlite, migrations);
    await migrateToLatest(postgres, migrations);

    const fromSqlite = await introspectSqlite(sqlite);
    const fromPostgres = await introspectPostgres(postgres);

    expect(Object.keys(fromSqlite).sort()).toEqual([
      'api_keys',
      'backups',
      'idempotency_keys',
      'outbox',
      'probe_runs',
      'probe_samples',
      'provider_transitions',
      'providers',
      'pruning_runs',
      'schema_migrations',
      'settings',
      'simulation_checkpoints',
      'simulation_ids',
      'simulations',
    ]);
    expect(fromPostgres).toEqual(fromSqlite);
  });

  it('every table has a primary key and every primary-key column is NOT NULL', async () => {
    const sqlite = await createDatabase(sqliteOnlyUrl);
    handles.push(sqlite);
    await migrateToLatest(sqlite, await loadMigrations());
    for (const [name, table] of Object.entries(await introspectSqlite(sqlite))) {
      expect(table.primaryKey, name).not.toEqual([]);
      for (const col of table.primaryKey) {
        expect(table.columns.find((c) => c.name === col)?.nullable, `${name}.${col}`).toBe(false);
      }
    }
  });
});
