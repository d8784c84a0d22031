import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import type { Kysely } from 'kysely';
import { getSetting, putSetting } from '../shared/db/settings';
import type { Database } from '../shared/db/schema';
import type { Queues } from './producer';

/**
 * Schedules (DESIGN.md §4.5): BullMQ job schedulers replace every in-process timer. The
 * database holds the wanted schedule; `applySchedules` makes Redis match it, so a change,
 * a new deployment or a Redis wipe converges.
 */

export interface ScheduleDefinition {
  name: string;
  queue: string;
  jobName: string;
  data: Record<string, unknown>;
  /** Default interval. */
  everyMs: number;
  /** Users may change it with PUT /v1/schedules/:name. Internal ones are fixed. */
  editable: boolean;
}

/**
 * Defaults of DESIGN.md §4.5. A schedule is listed only once its queue has a processor: a
 * scheduler feeding a queue nobody consumes would only pile up jobs.
 */
export const SCHEDULES: readonly ScheduleDefinition[] = Object.freeze([
  {
    name: 'backup',
    queue: 'backups',
    jobName: 'create-backup',
    data: { trigger: 'scheduled' },
    everyMs: 24 * 3_600_000,
    editable: true,
  },
  {
    name: 'probes',
    queue: 'probes',
    jobName: 'probe-cycle',
    data: {},
    everyMs: 30_000,
    editable: true,
  },
  {
    name: 'pruning',
    queue: 'pruning',
    jobName: 'prune',
    data: { dry_run: false },
    everyMs: 3_600_000,
    editable: true,
  },
  {
    name: 'outbox-relay',
    queue: 'maintenance',
    jobName: 'relay-outbox',
    data: {},
    everyMs: 2_000,
    editable: false,
  },
  {
    name: 'reconcile',
    queue: 'maintenance',
    jobName: 'reconcile',
    data: {},
    everyMs: 60_000,
    editable: false,
  },
]);

export const EDITABLE_SCHEDULES = SCHEDULES.filter((s) => s.editable).map((s) => s.name);

/** The schedules with the intervals this deployment configures for the internal ones. */
export function schedulesFor(config: { RECONCILE_EVERY_MS: number }): readonly ScheduleDefinition[] {
  return SCHEDULES.map((s) => (s.name === 'reconcile' ? { ...s, everyMs: config.RECONCILE_EVERY_MS } : s));
}

/** What is wanted for one schedule: an interval or a cron pattern, and whether it runs. */
export type ScheduleSpec = { enabled: boolean } & (
  { every_ms: number; cron?: undefined } | { cron: string; every_ms?: undefined }
);

/**
 * PUT /v1/schedules/:name body: at most one of every_ms (≥ 1000) and cron, and `enabled`.
 * With an interval or pattern, `enabled` defaults to true; `{"enabled": false}` alone keeps the
 * stored interval or pattern and only turns the schedule off (or on).
 */
export const scheduleSpecSchema = z
  .object({
    every_ms: z
      .number({ error: 'every_ms must be a number of milliseconds' })
      .int({ error: 'every_ms must be a whole number' })
      .min(1000, { error: 'every_ms must be at least 1000' })
      .max(366 * 24 * 3_600_000, { error: 'every_ms must be at most a year' })
      .optional(),
    cron: z
      .string({ error: 'cron must be a string' })
      .min(1)
      .max(200, { error: 'cron must be at most 200 characters' })
      .superRefine((v, ctx) => {
        try {
          // Some dates that never come (31 February or April) parse, and fail only here.
          CronExpressionParser.parse(v, { tz: 'UTC' }).next();
        } catch (err) {
          // The parser says which field is wrong, or that a date never comes (30 February).
          const why = (err instanceof Error ? err.message : String(err)).slice(0, 200);
          ctx.addIssue({
            code: 'custom',
            message: `cron cannot be scheduled: ${why} (e.g. "0 3 * * *" for 03:00 UTC daily)`,
          });
        }
      })
      .optional(),
    enabled: z.boolean({ error: 'enabled must be true or false' }).optional(),
  })
  .strict()
  .refine((v) => v.every_ms === undefined || v.cron === undefined, {
    error: 'give every_ms or cron, not both',
    path: ['every_ms'],
  })
  .refine((v) => v.every_ms !== undefined || v.cron !== undefined || v.enabled !== undefined, {
    error: 'give every_ms or cron (and optionally enabled), or enabled alone to turn the schedule off or on',
    path: ['every_ms'],
  });

/** The spec a PUT body asks for, given what is stored now. */
export function changedSchedule(
  current: ScheduleSpec,
  body: z.infer<typeof scheduleSpecSchema>,
): ScheduleSpec {
  if (body.cron !== undefined) return { cron: body.cron, enabled: body.enabled ?? true };
  if (body.every_ms !== undefined) return { every_ms: body.every_ms, enabled: body.enabled ?? true };
  return { ...current, enabled: body.enabled ?? current.enabled };
}

const settingKey = (name: string) => `schedule:${name}`;

export function scheduleDefinition(name: string): ScheduleDefinition | undefined {
  return SCHEDULES.find((s) => s.name === name);
}

export async function wantedSchedule(db: Kysely<Database>, def: ScheduleDefinition): Promise<ScheduleSpec> {
  if (!def.editable) return { every_ms: def.everyMs, enabled: true };
  const stored = await getSetting<ScheduleSpec>(db, settingKey(def.name));
  return stored ?? { every_ms: def.everyMs, enabled: true };
}

export async function storeSchedule(
  db: Kysely<Database>,
  name: string,
  spec: ScheduleSpec,
  now: number,
): Promise<void> {
  await putSetting(db, settingKey(name), spec, now);
}

/** Make one scheduler in Redis match the wanted spec (idempotent). Queues this process lacks are skipped. */
export async function applySchedule(
  queues: Queues,
  def: ScheduleDefinition,
  spec: ScheduleSpec,
): Promise<'applied' | 'removed' | 'skipped'> {
  const queue = queues.byName.get(def.queue);
  if (!queue) return 'skipped';
  if (!spec.enabled) {
    await queue.removeJobScheduler(def.name);
    return 'removed';
  }
  await queue.upsertJobScheduler(
    def.name,
    spec.cron !== undefined ? { pattern: spec.cron, tz: 'UTC' } : { every: spec.every_ms },
    { name: def.jobName, data: def.data },
  );
  return 'applied';
}

/** Apply every schedule from the database. @returns names applied, removed or skipped. */
export async function applySchedules(
  db: Kysely<Database>,
  queues: Queues,
  defs: readonly ScheduleDefinition[] = SCHEDULES,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const def of defs) out[def.name] = await applySchedule(queues, def, await wantedSchedule(db, def));
  return out;
}

/** Whether Redis holds every enabled scheduler (cheap: one read per schedule). */
export async function schedulersPresent(
  db: Kysely<Database>,
  queues: Queues,
  defs: readonly ScheduleDefinition[] = SCHEDULES,
): Promise<boolean> {
  for (const def of defs) {
    const queue = queues.byName.get(def.queue);
    if (!queue) continue;
    const spec = await wantedSchedule(db, def);
    const present = (await queue.getJobScheduler(def.name)) !== undefined;
    if (spec.enabled !== present) return false;
  }
  return true;
}

/** List every schedule sync waits on; a push wakes one of them at once. */
export const scheduleWakeKey = (prefix: string) => `${prefix}:schedules:wake`;
