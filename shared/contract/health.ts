import { z } from 'zod';

/** GET /healthz: the process is up. */
export const healthResponseSchema = z.object({ status: z.literal('ok') });
export type HealthResponse = z.infer<typeof healthResponseSchema>;

/** The dependencies /readyz checks, each `ok` or a short reason (no secrets). */
export const READINESS_CHECKS = ['database', 'migrations', 'redis'] as const;
export type ReadinessCheck = (typeof READINESS_CHECKS)[number];

export const readinessChecksSchema = z.object({
  database: z.string(),
  migrations: z.string(),
  redis: z.string(),
});
export type ReadinessChecks = z.infer<typeof readinessChecksSchema>;

/** GET /readyz when every check is `ok` (otherwise a 503 `dependency-unavailable` problem with `checks`). */
export const readyResponseSchema = z.object({
  status: z.literal('ready'),
  checks: z.object({ database: z.literal('ok'), migrations: z.literal('ok'), redis: z.literal('ok') }),
});
export type ReadyResponse = z.infer<typeof readyResponseSchema>;
