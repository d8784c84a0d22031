import { z } from 'zod';
import { ConfigError } from './errors';
import { parsePostgresUrl, URL_ENCODING_ADVICE } from './postgres-url';

/**
 * Every setting, from the environment, through one zod schema (DESIGN.md §8).
 * All problems are reported together; secrets are never echoed back.
 */

const SECRET_KEYS = new Set(['TASKYARD_ADMIN_KEY', 'DATABASE_URL', 'REDIS_URL']);

const intFrom = (min: number, max: number) =>
  z.coerce
    .number({ error: 'must be a number' })
    .int({ error: 'must be a whole number' })
    .min(min, { error: `must be at least ${min}` })
    .max(max, { error: `must be at most ${max}` });

const NOT_A_URL = `is not a valid URL: ${URL_ENCODING_ADVICE}`;

const schema = z.object({
  /** HTTP port of the api. @defaultValue 3000 */
  PORT: intFrom(0, 65535).default(3000),
  /** Interface the api binds. @defaultValue 127.0.0.1 */
  HOST: z.string().min(1).default('127.0.0.1'),
  /** `sqlite:<path>` or `postgres://…` (optional `?schema=<name>`). @defaultValue sqlite:./data/taskyard.db */
  DATABASE_URL: z
    .string()
    .default('sqlite:./data/taskyard.db')
    .refine((v) => /^sqlite:.+/.test(v) || /^postgres(ql)?:\/\/.+/.test(v), {
      error:
        'must start with sqlite: (e.g. sqlite:./data/taskyard.db) or postgres:// (e.g. postgres://user@host:5432/db)',
    })
    // The pool's own reading of the URL, so what passes here opens (exit 78, not 1 at connect).
    .superRefine((v, ctx) => {
      if (!/^postgres/.test(v)) return;
      try {
        parsePostgresUrl(v);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    }),
  /** Redis connection URL. @defaultValue redis://127.0.0.1:6379 */
  REDIS_URL: z
    .string()
    .default('redis://127.0.0.1:6379')
    .refine((v) => /^rediss?:\/\/.+/.test(v), { error: 'must be a redis:// or rediss:// URL' })
    .refine((v) => URL.canParse(v), { error: NOT_A_URL }),
  /** Prefix of every Redis key taskyard writes (queues, locks, fences). @defaultValue taskyard */
  REDIS_PREFIX: z
    .string()
    .default('taskyard')
    .refine((v) => /^[A-Za-z0-9_{}.-]{1,64}$/.test(v), {
      error: 'must be 1-64 characters of letters, digits, _ . - { } (braces for a Redis Cluster hash tag)',
    }),
  /** development | production | test. @defaultValue development */
  TASKYARD_ENV: z.enum(['development', 'production', 'test']).default('development'),
  /** Bootstraps the first admin key (stored hashed). No default; development makes one. */
  TASKYARD_ADMIN_KEY: z
    .string()
    .min(24, { error: 'must be at least 24 characters' })
    .max(256, { error: 'must be at most 256 characters' })
    .refine((v) => /^[\x21-\x7e]+$/.test(v), { error: 'must be visible ASCII without spaces' })
    .optional(),
  /** Where backup archives are written. @defaultValue ./data/backups */
  BACKUP_DIR: z.string().min(1).default('./data/backups'),
  /** Succeeded backups kept, file and row. @defaultValue 7 */
  BACKUP_KEEP_LAST: intFrom(1, 1000).default(7),
  /** Lifetime of idempotency records. @defaultValue 24 */
  IDEMPOTENCY_TTL_HOURS: intFrom(1, 24 * 30).default(24),
  /** How long stop() drains active jobs before force-closing. @defaultValue 30000 */
  DRAIN_TIMEOUT_MS: intFrom(0, 3_600_000).default(30_000),
  /** pino level. @defaultValue info */
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Concurrent jobs per worker process, per queue. */
  BACKUPS_CONCURRENCY: intFrom(1, 64).default(1),
  SIMULATIONS_CONCURRENCY: intFrom(1, 64).default(1),
  PRUNING_CONCURRENCY: intFrom(1, 64).default(1),
  PROBES_CONCURRENCY: intFrom(1, 64).default(1),
  /** Only read when TASKYARD_ENV=test: concurrency of the test-only `noop` queue. */
  NOOP_CONCURRENCY: intFrom(1, 256).default(8),
  /** BullMQ job lock duration: a crashed worker's active jobs are recovered after about this long. @defaultValue 30000 */
  WORKER_LOCK_DURATION_MS: intFrom(1000, 600_000).default(30_000),
  /** How often BullMQ looks for stalled jobs (those whose worker died). @defaultValue 30000 */
  WORKER_STALLED_INTERVAL_MS: intFrom(500, 600_000).default(30_000),
  /** How often the reconciler looks for resources whose job is gone. @defaultValue 60000 */
  RECONCILE_EVERY_MS: intFrom(1000, 86_400_000).default(60_000),
  /** Resources younger than this are left to the api and relay. @defaultValue 30000 */
  RECONCILE_AFTER_MS: intFrom(0, 86_400_000).default(30_000),
  /** Longest time a worker's schedule sync waits before re-checking Redis (bounds recovery after a Redis wipe). @defaultValue 15 */
  SCHEDULE_CHECK_SECONDS: intFrom(1, 3600).default(15),
  /** Only honoured when TASKYARD_ENV=test: a fault point for crash drills. */
  TASKYARD_FAULT: z.enum(['exit-after-commit']).optional(),
  /** Single-runner lock TTL (auto-extended while work runs): how long a crashed holder blocks its scope. @defaultValue 30000 */
  LOCK_TTL_MS: intFrom(1000, 600_000).default(30_000),
  /** How often a running simulation stores a checkpoint. @defaultValue 5000 */
  SIMULATION_CHECKPOINT_EVERY_MS: intFrom(100, 600_000).default(5_000),
  /** Providers probed at once in one cycle. @defaultValue 16 */
  PROBE_CONCURRENCY: intFrom(1, 10_000).default(16),
  /** Consecutive failures that take a provider from degraded to down. @defaultValue 3 */
  DOWN_AFTER: intFrom(1, 100).default(3),
  /** Consecutive successes that bring a degraded or down provider back to healthy. @defaultValue 2 */
  RECOVER_AFTER: intFrom(1, 100).default(2),
  /** Probe samples older than this are pruned. @defaultValue 7 */
  PROBE_SAMPLE_RETENTION_DAYS: intFrom(1, 3650).default(7),
  /** Terminal simulations (and their checkpoints) older than this are pruned. @defaultValue 30 */
  SIMULATION_RETENTION_DAYS: intFrom(1, 3650).default(30),
  /**
   * Finished probe runs and pruning runs older than this are pruned. Unset, it is 30 or, when
   * more, PROBE_SAMPLE_RETENTION_DAYS or IDEMPOTENCY_TTL_HOURS in days (what points at runs).
   */
  RUN_RETENTION_DAYS: intFrom(1, 3650).optional(),
  /** BullMQ completed and failed jobs older than this are pruned. @defaultValue 24 */
  JOB_RETENTION_HOURS: intFrom(1, 24 * 365).default(24),
  /** A request (head and body) not received in full within this gets 408. @defaultValue 30000 */
  HTTP_REQUEST_TIMEOUT_MS: intFrom(1000, 600_000).default(30_000),
  /** Request body limit in bytes. @defaultValue 65536 (64 KiB) */
  BODY_LIMIT_BYTES: intFrom(1024, 10 * 1024 * 1024).default(64 * 1024),
  /**
   * Requests per minute each API key may make to one api process; 0 turns the limit off.
   * @defaultValue 6000 (100 a second)
   */
  RATE_LIMIT_PER_MINUTE: intFrom(0, 10_000_000).default(6000),
});

type Parsed = z.infer<typeof schema>;
export type Config = Readonly<Omit<Parsed, 'RUN_RETENTION_DAYS'> & { RUN_RETENTION_DAYS: number }>;

/** RUN_RETENTION_DAYS when unset: long enough for everything that points at a run. */
export const DEFAULT_RUN_RETENTION_DAYS = 30;

export type QueueConcurrency = Readonly<Record<string, number>>;

/**
 * Parse the environment once, at start.
 * @throws ConfigError listing every problem, with what would be valid; never echoes secret values.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const input: Record<string, string | undefined> = {};
  for (const key of Object.keys(schema.shape)) {
    const raw = env[key];
    // An empty variable means "not set", as it does in docker-compose and shells.
    input[key] = raw === '' ? undefined : raw;
  }
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '?');
      const shown = SECRET_KEYS.has(key) ? '(value hidden)' : JSON.stringify(input[key]);
      return `${key}=${shown}: ${issue.message}`;
    });
    throw new ConfigError(problems);
  }
  const crossed = crossFieldProblems(parsed.data);
  if (crossed.length > 0) throw new ConfigError(crossed);
  return Object.freeze({
    ...parsed.data,
    RUN_RETENTION_DAYS:
      parsed.data.RUN_RETENTION_DAYS ??
      Math.max(DEFAULT_RUN_RETENTION_DAYS, parsed.data.PROBE_SAMPLE_RETENTION_DAYS, replayDays(parsed.data)),
  });
}

/** How long, in whole days, an idempotent replay can still point at what it created. */
function replayDays(c: Pick<Parsed, 'IDEMPOTENCY_TTL_HOURS'>): number {
  return Math.ceil(c.IDEMPOTENCY_TTL_HOURS / 24);
}

/**
 * Settings that are each valid but wrong together. Finished runs must outlive what points
 * at them: a probe sample names its run, and a replayed `POST /v1/probes/runs` or
 * `/v1/pruning/runs` answers with the run's Location for IDEMPOTENCY_TTL_HOURS.
 */
function crossFieldProblems(c: Parsed): string[] {
  const problems: string[] = [];
  // Unset, it is made long enough (loadConfig); only a value the user chose can be too short.
  if (c.RUN_RETENTION_DAYS === undefined) return problems;
  if (c.RUN_RETENTION_DAYS < c.PROBE_SAMPLE_RETENTION_DAYS) {
    problems.push(
      `RUN_RETENTION_DAYS=${c.RUN_RETENTION_DAYS}: must be at least PROBE_SAMPLE_RETENTION_DAYS (${c.PROBE_SAMPLE_RETENTION_DAYS}), or kept samples would name runs already pruned`,
    );
  }
  if (c.RUN_RETENTION_DAYS < replayDays(c)) {
    problems.push(
      `RUN_RETENTION_DAYS=${c.RUN_RETENTION_DAYS}: must be at least ${replayDays(c)} (IDEMPOTENCY_TTL_HOURS=${c.IDEMPOTENCY_TTL_HOURS} in days, rounded up), or a replayed answer would point at a run already pruned`,
    );
  }
  return problems;
}

/** Per-queue worker concurrency from the config. */
export function queueConcurrency(config: Config): QueueConcurrency {
  return Object.freeze({
    backups: config.BACKUPS_CONCURRENCY,
    simulations: config.SIMULATIONS_CONCURRENCY,
    pruning: config.PRUNING_CONCURRENCY,
    probes: config.PROBES_CONCURRENCY,
    noop: config.NOOP_CONCURRENCY,
  });
}

/** Exit code for configuration errors (sysexits EX_CONFIG). */
export const EXIT_CONFIG = 78;
