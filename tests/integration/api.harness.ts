import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import { buildApp, createHttpServer } from '../../api/app';
import { loadMigrations } from '../../migrations/index';
import { systemClock, type Clock } from '../../shared/clock';
import { loadConfig, type Config } from '../../shared/config';
import { generateApiKey, hashApiKey, insertApiKey, revokeApiKey } from '../../shared/db/api-keys';
import { createDatabase, type DatabaseHandle } from '../../shared/db/database';
import { migrateToLatest } from '../../shared/db/migrate';
import { createLogger, type Logger } from '../../shared/logger';
import { createRedis, deleteKeysWithPrefix } from '../../shared/redis';
import type { Scope } from '../../shared/types';
import { createQueues, type Queues } from '../../queues/producer';
import { enabledQueues } from '../../queues/registry';
import { testRedisUrl, uniquePrefix } from '../helpers/services';

/**
 * The api in-process on port 0 against a real database and Redis, with every log line
 * captured. Shared by tests/integration/api.*.test.ts.
 */
export interface ApiUnderTest {
  url: string;
  config: Config;
  logger: Logger;
  /** Principal ids of the keys, by scope. */
  principalIds: Record<Scope, string>;
  db: DatabaseHandle;
  redis: Redis;
  queues: Queues;
  prefix: string;
  /** Every log line written so far (raw JSON). */
  logs: string[];
  keys: Record<Scope | 'revoked', string>;
  close(): Promise<void>;
}

export interface StartOptions {
  databaseUrl: string;
  /** Redis for the api; a closed port simulates an outage. @defaultValue the test Redis */
  redisUrl?: string;
  /** @defaultValue true */
  migrate?: boolean;
  /** @defaultValue systemClock */
  clock?: Clock;
  afterCommit?: () => void | Promise<void>;
  /** Extra configuration (e.g. BACKUP_DIR). */
  env?: Record<string, string>;
}

export async function startApi(opts: StartOptions): Promise<ApiUnderTest> {
  const prefix = uniquePrefix('api');
  const redisUrl = opts.redisUrl ?? testRedisUrl();
  const config = loadConfig({
    TASKYARD_ENV: 'test',
    DATABASE_URL: opts.databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: prefix,
    LOG_LEVEL: 'debug',
    // Never the repository's ./data: a test that writes an archive writes it here.
    BACKUP_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-api-backups-')),
    ...opts.env,
  });
  const logs: string[] = [];
  const logger = createLogger(
    { level: 'debug', name: 'api-test' },
    { write: (line: string) => void logs.push(line) },
  );
  const db = await createDatabase(config.DATABASE_URL, { logger });
  const migrations = await loadMigrations();
  const keys = {} as Record<Scope | 'revoked', string>;
  const principalIds = {} as Record<Scope, string>;
  if (opts.migrate !== false) {
    await migrateToLatest(db, migrations);
    const now = systemClock.now().getTime();
    for (const scope of ['read', 'write', 'admin'] as const) {
      keys[scope] = generateApiKey();
      principalIds[scope] = (
        await insertApiKey(db.db, {
          name: `test-${scope}`,
          scopes: [scope],
          keyHash: hashApiKey(keys[scope]),
          now,
        })
      ).id;
    }
    keys.revoked = generateApiKey();
    const revoked = await insertApiKey(db.db, {
      name: 'test-revoked',
      scopes: ['admin'],
      keyHash: hashApiKey(keys.revoked),
      now,
    });
    await revokeApiKey(db.db, revoked.id, now);
  }
  const redis = createRedis(config.REDIS_URL, 'client');
  redis.on('error', () => undefined);
  const queues = createQueues(enabledQueues(config), redis, prefix);
  for (const q of queues.byName.values()) q.on('error', () => undefined);
  const app = buildApp({
    config,
    db,
    redis,
    queues,
    logger,
    clock: opts.clock ?? systemClock,
    migrations,
    afterCommit: opts.afterCommit,
  });
  const server: Server = createHttpServer(app, logger);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    config,
    logger,
    principalIds,
    db,
    redis,
    queues,
    prefix,
    logs,
    keys,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await queues.close().catch(() => undefined);
      if (redis.status === 'ready') {
        await deleteKeysWithPrefix(redis, prefix);
        await redis.quit();
      } else {
        redis.disconnect();
      }
      const schema = new URL(opts.databaseUrl).searchParams.get('schema');
      if (db.dialect === 'postgres' && schema) {
        await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db.db);
      }
      await db.close();
    },
  };
}

/** Assert-friendly view of a response: status, headers, parsed body. */
export async function call(
  api: Pick<ApiUnderTest, 'url'>,
  path: string,
  init: RequestInit & { key?: string } = {},
): Promise<{ status: number; headers: Headers; body: any; text: string }> {
  const headers = new Headers(init.headers);
  if (init.key !== undefined) headers.set('authorization', `Bearer ${init.key}`);
  const res = await fetch(`${api.url}${path}`, { ...init, headers });
  const text = await res.text();
  let body: unknown;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, body, text };
}

/** Fields every problem response has (DESIGN.md §4.7). */
export function expectProblemShape(
  r: { status: number; headers: Headers; body: any },
  slug: string,
  status: number,
): void {
  if (r.status !== status) throw new Error(`expected ${status}, got ${r.status}: ${JSON.stringify(r.body)}`);
  const type = r.headers.get('content-type') ?? '';
  if (!type.startsWith('application/problem+json')) throw new Error(`content-type ${type}`);
  const b = r.body as Record<string, unknown>;
  const want = { type: `urn:taskyard:problem:${slug}`, status, instance: r.headers.get('x-request-id') };
  for (const [k, v] of Object.entries(want)) {
    if (b[k] !== v) throw new Error(`problem.${k} = ${JSON.stringify(b[k])}, expected ${JSON.stringify(v)}`);
  }
  for (const k of ['title', 'detail']) {
    if (typeof b[k] !== 'string' || b[k] === '') throw new Error(`problem.${k} missing`);
  }
}

/**
 * Every item of a newest-first list (DESIGN.md §5), following `next_cursor` `limit` at a time;
 * checks each page's size and that items are ordered by (created_at, id) descending.
 */
export async function allPages(
  api: Pick<ApiUnderTest, 'url'>,
  path: string,
  key: string,
  limit: number,
): Promise<Array<{ id: string; created_at: string }>> {
  const items: Array<{ id: string; created_at: string }> = [];
  let cursor: string | null = null;
  for (let page = 0; page < 10_000; page++) {
    const q = `?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const r = await call(api, `${path}${q}`, { key });
    if (r.status !== 200) throw new Error(`GET ${path}${q}: ${r.status} ${r.text}`);
    if (r.body.items.length > limit) throw new Error(`GET ${path}${q}: ${r.body.items.length} items`);
    items.push(...r.body.items);
    cursor = r.body.next_cursor;
    if (cursor === null) break;
  }
  if (cursor !== null) throw new Error(`${path}: still a next_cursor after 10,000 pages`);
  for (let i = 1; i < items.length; i++) {
    const [a, b] = [items[i - 1]!, items[i]!];
    const ordered = a.created_at > b.created_at || (a.created_at === b.created_at && a.id > b.id);
    if (!ordered)
      throw new Error(`${path}: ${a.id} (${a.created_at}) listed before ${b.id} (${b.created_at})`);
  }
  return items;
}
