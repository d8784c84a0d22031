import type { Kysely } from 'kysely';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../migrations/index';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { migrateToLatest, migrationStatus, type Migration } from '../../shared/db/migrate';
import { MigrationIntegrityError } from '../../shared/errors';
import { insertSimulationIfAbsent } from '../../shared/db/simulations-store';
import { BACKENDS, startGate } from '../helpers/services';
import { disposeTestDatabase } from '../helpers/test-database';

function extraMigration(name: string, table: string, fail = false): Migration {
  return {
    name,
    checksum: `checksum-of-${name}`,
    async up(db: Kysely<any>) {
      await db.schema
        .createTable(table)
        .addColumn('id', 'text', (c) => c.notNull().primaryKey())
        .execute();
      if (fail) throw new Error(`${name} fails on purpose`);
    },
  };
}

async function ledger(handle: DatabaseHandle) {
  return handle.db.selectFrom('schema_migrations').select(['name', 'checksum']).orderBy('name').execute();
}

async function tableExists(handle: DatabaseHandle, table: string): Promise<boolean> {
  const tables = await handle.db.introspection.getTables();
  return tables.some((t) => t.name === table);
}

describe.each(BACKENDS)('migrations on $backend', ({ makeUrl }) => {
  const urls: string[] = [];
  const handles: DatabaseHandle[] = [];

  async function open(url?: string): Promise<DatabaseHandle> {
    const u = url ?? makeUrl('migrate');
    if (url === undefined) urls.push(u);
    const handle = await createDatabase(u);
    handles.push(handle);
    return handle;
  }

  afterEach(async () => {
    await Promise.all(handles.splice(0).map((h) => h.close()));
  });

  afterAll(async () => {
    for (const url of urls) await disposeTestDatabase(url);
  });

  it('applies every migration once and a second run applies nothing', async () => {
    const migrations = await loadMigrations();
    const handle = await open();
    expect(await migrationStatus(handle, migrations)).toEqual({
      applied: [],
      pending: migrations.map((m) => m.name),
      problems: [],
    });

    expect(await migrateToLatest(handle, migrations)).toEqual(migrations.map((m) => m.name));
    expect(await migrateToLatest(handle, migrations)).toEqual([]);

    expect(await ledger(handle)).toEqual(migrations.map((m) => ({ name: m.name, checksum: m.checksum })));
    expect(await migrationStatus(handle, migrations)).toEqual({
      applied: migrations.map((m) => m.name),
      pending: [],
      problems: [],
    });
    for (const table of ['api_keys', 'idempotency_keys', 'outbox', 'settings']) {
      expect(await tableExists(handle, table)).toBe(true);
    }
  });

  it('0010 keeps the simulation_id of every run claimed before it, so none can be claimed again', async () => {
    const migrations = await loadMigrations();
    const at = migrations.findIndex((m) => m.name === '0010_simulation_ids');
    expect(at).toBeGreaterThan(0);
    const handle = await open();
    await migrateToLatest(handle, migrations.slice(0, at));
    const db = handle.db as unknown as Kysely<any>;
    await db
      .insertInto('simulations')
      .values([
        { id: 'before-a', status: 'succeeded', scenario: '{}', created_at: 1_000 },
        { id: 'before-b', status: 'queued', scenario: '{}', created_at: 2_000 },
      ])
      .execute();
    expect(await migrateToLatest(handle, migrations)).toEqual(migrations.slice(at).map((m) => m.name));
    const ids = await handle.db.selectFrom('simulation_ids').selectAll().orderBy('id').execute();
    expect(ids.map((r) => ({ ...r, created_at: Number(r.created_at) }))).toEqual([
      { id: 'before-a', created_at: 1_000, pruned_at: null },
      { id: 'before-b', created_at: 2_000, pruned_at: null },
    ]);
    const again = await insertSimulationIfAbsent(handle.db, {
      id: 'before-a',
      scenarioJson: '{}',
      createdBy: null,
      now: 3_000,
    });
    expect(again).toBeUndefined();
  });

  it('refuses to run when an applied migration changed, naming it', async () => {
    const migrations = await loadMigrations();
    const handle = await open();
    await migrateToLatest(handle, migrations);
    const [first, ...others] = migrations;
    const edited = [
      { ...first!, checksum: 'f'.repeat(64) },
      ...others,
      extraMigration('9000_after_edit', 'after_edit'),
    ];

    const err = await migrateToLatest(handle, edited).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationIntegrityError);
    expect((err as Error).message).toContain(`migration ${first!.name} changed after it was applied`);
    expect((await migrationStatus(handle, edited)).problems).toHaveLength(1);
    // Refused means refused: the new migration was not applied either.
    expect(await tableExists(handle, 'after_edit')).toBe(false);
    expect(await ledger(handle)).toHaveLength(migrations.length);
  });

  it('refuses to run when the database is newer than the code', async () => {
    const migrations = await loadMigrations();
    const handle = await open();
    await migrateToLatest(handle, migrations);
    await handle.db
      .insertInto('schema_migrations')
      .values({ name: '9999_from_the_future', checksum: 'abc', applied_at: Date.now() })
      .execute();

    const err = await migrateToLatest(handle, migrations).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationIntegrityError);
    expect((err as Error).message).toContain('9999_from_the_future is applied but unknown to this code');
  });

  it('lists every problem at once', async () => {
    const migrations = await loadMigrations();
    const handle = await open();
    await migrateToLatest(handle, migrations);
    await handle.db
      .insertInto('schema_migrations')
      .values({ name: '9999_from_the_future', checksum: 'abc', applied_at: Date.now() })
      .execute();
    const edited = migrations.map((m) => ({ ...m, checksum: 'e'.repeat(64) }));

    const status = await migrationStatus(handle, edited);
    expect(status.problems).toHaveLength(migrations.length + 1);
    const err = (await migrateToLatest(handle, edited).catch((e: unknown) => e)) as Error;
    for (const problem of status.problems) expect(err.message).toContain(problem);
  });

  it('five runners starting together apply each migration exactly once', async () => {
    const migrations = [
      ...(await loadMigrations()),
      extraMigration('9001_race_a', 'race_a'),
      extraMigration('9002_race_b', 'race_b'),
    ];
    const url = makeUrl('race');
    urls.push(url);
    const runners = await Promise.all(Array.from({ length: 5 }, () => open(url)));
    const gate = startGate();

    const results = Promise.all(
      runners.map(async (h) => {
        await gate.wait();
        return migrateToLatest(h, migrations);
      }),
    );
    gate.open();
    const applied = (await results).flat();

    expect(applied.sort()).toEqual(migrations.map((m) => m.name).sort());
    expect(await ledger(runners[0]!)).toHaveLength(migrations.length);
  });

  it('a migration that throws leaves neither a ledger row nor a partial table', async () => {
    const base = await loadMigrations();
    const handle = await open();
    const migrations = [...base, extraMigration('9003_breaks', 'half_made', true)];

    await expect(migrateToLatest(handle, migrations)).rejects.toThrow('9003_breaks fails on purpose');

    expect((await ledger(handle)).map((r) => r.name)).toEqual(base.map((m) => m.name));
    expect(await tableExists(handle, 'half_made')).toBe(false);
    expect((await migrationStatus(handle, migrations)).pending).toEqual(['9003_breaks']);
  });

  it('refuses a pending migration that sorts before an applied one', async () => {
    const base = await loadMigrations();
    const handle = await open();
    await migrateToLatest(handle, [...base, extraMigration('9005_later', 'later_table')]);

    const err = await migrateToLatest(handle, [
      ...base,
      extraMigration('9004_inserted', 'inserted_table'),
      extraMigration('9005_later', 'later_table'),
    ]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationIntegrityError);
    expect((err as Error).message).toContain(
      '9004_inserted is pending but the later 9005_later is already applied',
    );
  });
});

describe('loadMigrations', () => {
  it('lists the numbered files in order with the SHA-256 of their source', async () => {
    const migrations = await loadMigrations();
    expect(migrations.map((m) => m.name)[0]).toBe('0001_initial');
    for (const m of migrations) expect(m.checksum).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(migrations.map((m) => m.checksum)).size).toBe(migrations.length);
  });
});
