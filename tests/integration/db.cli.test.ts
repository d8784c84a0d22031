import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/taskyard';
import { findActiveApiKeyByHash, hashApiKey } from '../../shared/db/api-keys';
import { createDatabase } from '../../shared/db/database';
import { loadMigrations } from '../../migrations/index';
import { BACKENDS, testSqliteUrl } from '../helpers/services';
import { disposeTestDatabase } from '../helpers/test-database';

const MIGRATIONS = (await loadMigrations()).map((m) => m.name);

const ROOT = path.resolve(import.meta.dirname, '../..');

async function run(argv: string[], env: NodeJS.ProcessEnv) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, {
    env,
    out: (t) => out.push(t),
    err: (t) => err.push(t),
    now: () => 1_767_225_600_000,
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe.each(BACKENDS)('taskyard CLI on $backend', ({ makeUrl }) => {
  const url = makeUrl('cli');
  const env = { DATABASE_URL: url };

  afterAll(async () => {
    await disposeTestDatabase(url);
  });

  it('keys commands refuse to run before the database is migrated', async () => {
    const r = await run(['keys', 'list'], env);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`pending migration(s) (${MIGRATIONS.join(', ')}): run 'taskyard migrate' first`);
  });

  it('migrate applies the migrations, then reports up to date', async () => {
    expect(await run(['migrate'], env)).toMatchObject({
      code: 0,
      out: MIGRATIONS.map((m) => `applied ${m}`).join('\n'),
    });
    const again = await run(['migrate'], env);
    expect(again.code).toBe(0);
    expect(again.out).toMatch(/: up to date$/);
  });

  it('keys create prints the key once and stores only its hash; list and revoke never show it', async () => {
    const created = await run(
      ['keys', 'create', '--name', 'ci bot', '--scopes', 'write,read', '--json'],
      env,
    );
    expect(created.code).toBe(0);
    const { id, key, scopes, name } = JSON.parse(created.out) as {
      id: string;
      key: string;
      scopes: string[];
      name: string;
    };
    expect({ name, scopes }).toEqual({ name: 'ci bot', scopes: ['read', 'write'] });
    expect(key).toMatch(/^ty_/);

    const handle = await createDatabase(url);
    try {
      expect((await findActiveApiKeyByHash(handle.db, hashApiKey(key)))?.id).toBe(id);
      const stored = JSON.stringify(await handle.db.selectFrom('api_keys').selectAll().execute());
      expect(stored).not.toContain(key);
    } finally {
      await handle.close();
    }

    const listed = await run(['keys', 'list'], env);
    expect(listed.code).toBe(0);
    expect(listed.out).toContain(id);
    expect(listed.out).toContain('active');
    expect(listed.out).not.toContain(key);
    expect(listed.out).not.toContain(hashApiKey(key));

    expect(await run(['keys', 'revoke', id], env)).toMatchObject({ code: 0, out: `revoked key ${id}` });
    expect((await run(['keys', 'revoke', id], env)).code).toBe(1);
    const json = JSON.parse((await run(['keys', 'list', '--json'], env)).out) as Array<{
      id: string;
      revoked_at: string;
    }>;
    expect(json.find((k) => k.id === id)?.revoked_at).toBe('2026-01-01T00:00:00.000Z');
  });

  it('text output of keys create shows the key once with a warning', async () => {
    const r = await run(['keys', 'create', '--name', 'ops', '--scopes', 'admin'], env);
    expect(r.code).toBe(0);
    const keys = r.out.match(/ty_[A-Za-z0-9_-]{43}/g);
    expect(keys).toHaveLength(1);
    expect(r.out).toContain('shown only this once');
  });
});

describe('taskyard CLI usage errors', () => {
  const env = { DATABASE_URL: 'sqlite::memory:' };

  it.each([
    [['frobnicate'], 'unknown command "frobnicate"'],
    [['keys', 'rotate'], 'unknown keys command "rotate"'],
    [
      ['keys', 'create', '--name', 'x', '--scopes', 'read,root'],
      'unknown scope(s) "root": use read, write, admin',
    ],
    [['keys', 'create', '--name', 'x', '--scopes', ','], '--scopes is empty'],
    [['keys', 'create', '--scopes', 'read'], 'keys create needs --name'],
    [['keys', 'create', '--name', 'x'], 'keys create needs --scopes'],
    [['keys', 'list', '--verbose'], "Unknown option '--verbose'"],
    [['keys', 'revoke'], 'keys revoke takes exactly one key id'],
    [['migrate', 'now'], 'Unexpected argument'],
  ])('%j exits 64 with a clear message', async (argv, message) => {
    const r = await run(argv, env);
    expect(r.code).toBe(64);
    expect(r.err).toContain(message);
  });

  it('--help prints usage and exits 0', async () => {
    const r = await run(['--help'], env);
    expect(r.code).toBe(0);
    expect(r.out).toContain('keys create --name <name> --scopes <list>');
  });

  it('an invalid DATABASE_URL exits 78 without echoing it', async () => {
    const r = await run(['migrate'], { DATABASE_URL: 'mysql://root:hunter2@db/x' });
    expect(r.code).toBe(78);
    expect(r.err).toContain('DATABASE_URL');
    expect(r.err).not.toContain('hunter2');
  });
});

describe('bin/taskyard', () => {
  const url = testSqliteUrl('cli-bin');
  afterAll(() => disposeTestDatabase(url));

  it('runs the CLI through the sh wrapper and passes the exit code on', async () => {
    const bin = path.join(ROOT, 'bin', 'taskyard');
    const env = { ...process.env, DATABASE_URL: url };
    const { stdout } = await promisify(execFile)(bin, ['migrate'], { env, cwd: '/' });
    expect(stdout.trim()).toBe(MIGRATIONS.map((m) => `applied ${m}`).join('\n'));
    const failed = await promisify(execFile)(bin, ['nope'], { env }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed).toMatchObject({ code: 64 });
    expect((failed as { stderr: string }).stderr).toContain('unknown command "nope"');
  });
});
