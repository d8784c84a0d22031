/**
 * A second reference for the enqueue benchmark: the least any design that persists work
 * before enqueuing it must do per request. Express 5 with its JSON body parser, one durable
 * INSERT (SQLite in WAL with synchronous = FULL, or Postgres with the server's settings), then
 * one BullMQ `add` with the row's id as job id, then 202. No auth, no idempotency, no outbox,
 * no validation. Run as its own process (`node --import tsx bench/floor-server.ts`) with
 * FLOOR_DATABASE_URL (`sqlite:<file>` or `postgres://…`), REDIS_URL and REDIS_PREFIX; prints
 * `{"msg":"floor listening","port":N}` on stdout. FLOOR_GROUP_COMMIT=1 (SQLite) shares one
 * transaction and fsync among the inserts of one event-loop turn, as the api does.
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import SQLite from 'better-sqlite3';
import { Queue } from 'bullmq';
import express from 'express';
import { Redis } from 'ioredis';
import pg from 'pg';

const url = process.env.FLOOR_DATABASE_URL ?? '';
/** Postgres: the bench creates a private schema and passes `<schema>.floor_jobs`. */
const table = process.env.FLOOR_TABLE ?? 'floor_jobs';
if (!/^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/.test(table)) throw new Error(`bad FLOOR_TABLE ${table}`);
const DDL = `create table if not exists ${table} (id text primary key, label text, created_at bigint not null)`;
const INSERT = `insert into ${table} (id, label, created_at) values`;

let insert: (id: string, label: string | null, now: number) => Promise<void>;
let closeDb: () => Promise<void>;
if (url.startsWith('sqlite:')) {
  const db = new SQLite(url.slice('sqlite:'.length));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(DDL);
  const stmt = db.prepare(`${INSERT} (?, ?, ?)`);
  if (process.env.FLOOR_GROUP_COMMIT === '1') {
    // The api's group commit, reduced to its core: the inserts of one event-loop turn share
    // one transaction and one fsync; each caller resolves after that COMMIT.
    let pending: { row: [string, string | null, number]; done: (err?: unknown) => void }[] = [];
    const flush = db.transaction((rows: typeof pending) => {
      for (const p of rows) stmt.run(...p.row);
    });
    insert = (id, label, now) =>
      new Promise<void>((resolve, reject) => {
        if (pending.length === 0) {
          setImmediate(() => {
            const rows = pending;
            pending = [];
            let err: unknown;
            try {
              flush(rows);
            } catch (e) {
              err = e;
            }
            for (const p of rows) p.done(err);
          });
        }
        pending.push({ row: [id, label, now], done: (err) => (err === undefined ? resolve() : reject(err)) });
      });
  } else {
    insert = async (id, label, now) => {
      stmt.run(id, label, now);
    };
  }
  closeDb = async () => {
    db.close();
  };
} else if (/^postgres(ql)?:\/\//.test(url)) {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  await pool.query(DDL);
  insert = async (id, label, now) => {
    await pool.query(`${INSERT} ($1, $2, $3)`, [id, label, now]);
  };
  closeDb = () => pool.end();
} else {
  throw new Error('FLOOR_DATABASE_URL must be sqlite:<file> or postgres://…');
}

const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
  maxRetriesPerRequest: null,
});
const queue = new Queue('floor', { connection, prefix: process.env.REDIS_PREFIX ?? 'bench-floor' });

const app = express();
app.post('/enqueue', express.json(), async (req, res) => {
  const id = randomUUID();
  const label = typeof req.body?.label === 'string' ? (req.body.label as string) : null;
  await insert(id, label, Date.now());
  await queue.add('floor', { id }, { jobId: id });
  res.status(202).json({ id, status: 'queued' });
});

const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  console.log(JSON.stringify({ msg: 'floor listening', port }));
});

const stop = () => {
  server.close(() => {
    void queue
      .close()
      .then(() => connection.quit())
      .then(closeDb)
      .finally(() => process.exit(0));
  });
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
