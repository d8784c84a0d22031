import net from 'node:net';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Redis URL for tests (set by global-setup). */
export function testRedisUrl(): string {
  return process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
}

/** A Redis key prefix no other test file or run uses. */
export function uniquePrefix(label = 't'): string {
  return `ty-test-${label}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** A fresh, private Postgres schema as a DATABASE_URL (`?schema=` is honoured by shared/db). */
export function testPostgresUrl(label = 't'): string {
  const base = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const schema = `ty_${label.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(5).toString('hex')}`;
  const u = new URL(base);
  u.searchParams.set('schema', schema);
  return u.toString();
}

/** A fresh SQLite file in a private temp directory, as a DATABASE_URL. */
export function testSqliteUrl(label = 't'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `taskyard-${label}-`));
  return `sqlite:${path.join(dir, 'taskyard.db')}`;
}

/** Both backends, for `describe.each(BACKENDS)`. `makeUrl()` returns an isolated database each call. */
export const BACKENDS = [
  { backend: 'sqlite' as const, makeUrl: (label?: string) => testSqliteUrl(label) },
  { backend: 'postgres' as const, makeUrl: (label?: string) => testPostgresUrl(label) },
];

/** Poll until `check` returns a truthy value, or fail after `timeoutMs`. Never a fixed sleep. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 20, what = 'condition' } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: last });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A start gate: racers await `wait()`; `open()` releases them together. */
export function startGate(): { wait: () => Promise<void>; open: () => void } {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { wait: () => p, open };
}

/** A TCP port on which nothing listens: bind, read the port, close. */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
