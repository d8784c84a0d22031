import net from 'node:net';

/**
 * Find Redis and Postgres for the tests: the local services at TEST_REDIS_URL /
 * TEST_DATABASE_URL (defaulting to 127.0.0.1), or, when those do not answer and Docker
 * is present, containers started by testcontainers. Exported as environment variables,
 * which the forked test workers inherit.
 */
const DEFAULT_REDIS = 'redis://127.0.0.1:6379';
const DEFAULT_PG = 'postgres://postgres@127.0.0.1:5432/test';

function reachable(url: string, timeoutMs = 1500): Promise<boolean> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol.startsWith('redis') ? 6379 : 5432));
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

const stops: Array<() => Promise<unknown>> = [];

export async function setup(): Promise<void> {
  const redisUrl = process.env.TEST_REDIS_URL ?? DEFAULT_REDIS;
  const pgUrl = process.env.TEST_DATABASE_URL ?? DEFAULT_PG;
  const [redisOk, pgOk] = await Promise.all([reachable(redisUrl), reachable(pgUrl)]);
  process.env.TEST_REDIS_URL = redisUrl;
  process.env.TEST_DATABASE_URL = pgUrl;
  if (redisOk && pgOk) return;
  // Fallback for machines with Docker but without local services.
  try {
    if (!redisOk) {
      const { RedisContainer } = await import('@testcontainers/redis');
      const c = await new RedisContainer('redis:7-alpine').start();
      stops.push(() => c.stop());
      process.env.TEST_REDIS_URL = c.getConnectionUrl();
    }
    if (!pgOk) {
      const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
      const c = await new PostgreSqlContainer('postgres:16-alpine').start();
      stops.push(() => c.stop());
      process.env.TEST_DATABASE_URL = c.getConnectionUri();
    }
  } catch (err) {
    throw new Error(
      `tests need Redis (${redisUrl}: ${redisOk ? 'ok' : 'not answering'}) and Postgres (${pgUrl}: ${
        pgOk ? 'ok' : 'not answering'
      }); start them, or set TEST_REDIS_URL / TEST_DATABASE_URL, or install Docker for testcontainers`,
      { cause: err },
    );
  }
}

export async function teardown(): Promise<void> {
  for (const stop of stops.reverse()) await stop();
}
