import { z } from 'zod';
import type { ProbeRunRow } from '../db/probe-runs-store';
import type { ProbeSampleRow, ProviderConfig, ProviderRow } from '../db/providers-store';
import { rfc3339 } from './common';
import { probeRunJobId } from './job-ids';

/**
 * Providers (probe targets), their health, and probe runs: request schemas and response views.
 *
 * `expected_status` takes either one status code (`204`) or an inclusive range
 * (`{"min": 200, "max": 299}`); responses always show the range. Default 200–399.
 */

export const MAX_PROVIDER_HEADERS = 20;
/** Headers a provider may not set: they would change how the request is framed or routed. */
export const FORBIDDEN_PROBE_HEADERS = [
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'proxy-connection',
] as const;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$/;
/** Visible ASCII, space and tab; no CR/LF (no header injection). */
const HEADER_VALUE = /^[\t\x20-\x7e]{0,1000}$/;
const NAME_TEXT = /^[^\p{Cc}]*$/u;

const statusCode = (field: string) =>
  z
    .number({ error: `${field} must be a number` })
    .int({ error: `${field} must be a whole number` })
    .min(100, { error: `${field} must be at least 100` })
    .max(599, { error: `${field} must be at most 599` });

const expectedStatusSchema = z
  .union(
    [
      statusCode('expected_status'),
      z.object({ min: statusCode('expected_status.min'), max: statusCode('expected_status.max') }).strict(),
    ],
    { error: 'expected_status must be a status code (e.g. 200) or {"min": 200, "max": 299} within 100–599' },
  )
  .transform((v) => (typeof v === 'number' ? { min: v, max: v } : v))
  .refine((v) => v.min <= v.max, { error: 'expected_status.min must not exceed expected_status.max' });

const nameSchema = z
  .string({ error: 'name must be a string' })
  .trim()
  .min(1, { error: 'name must not be blank' })
  .max(100, { error: 'name must be at most 100 characters' })
  .regex(NAME_TEXT, { error: 'name must not contain control characters' });

const urlSchema = z
  .string({ error: 'url must be a string' })
  .max(2048, { error: 'url must be at most 2048 characters' })
  .superRefine((v, ctx) => {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      ctx.addIssue({
        code: 'custom',
        message: 'url must be an absolute URL, e.g. https://example.com/health',
      });
      return;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      ctx.addIssue({ code: 'custom', message: 'url must use http or https' });
    }
    if (u.username !== '' || u.password !== '') {
      ctx.addIssue({
        code: 'custom',
        message: 'url must not carry credentials; send them in headers (e.g. Authorization)',
      });
    }
  });

/** What a view shows in place of a stored header value. */
export const REDACTED = '[redacted]';

const headersSchema = z
  .unknown()
  // A record is built by assignment, where "__proto__" would vanish without a word.
  .refine((v) => !(v !== null && typeof v === 'object' && Object.hasOwn(v, '__proto__')), {
    error: 'header name __proto__ is not allowed',
  })
  .pipe(
    z.record(z.string(), z.string({ error: 'header values must be strings' }), {
      error: 'headers must be an object of header names to string values',
    }),
  )
  .superRefine((headers, ctx) => {
    const names = Object.keys(headers);
    if (names.length > MAX_PROVIDER_HEADERS) {
      ctx.addIssue({ code: 'custom', message: `headers must have at most ${MAX_PROVIDER_HEADERS} entries` });
    }
    const seen = new Set<string>();
    for (const name of names) {
      const lower = name.toLowerCase();
      if (!HEADER_NAME.test(name)) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message:
            "header name must be 1-100 token characters (letters, digits, ! # $ % & ' * + . ^ _ ` | ~ -)",
        });
      } else if ((FORBIDDEN_PROBE_HEADERS as readonly string[]).includes(lower)) {
        ctx.addIssue({ code: 'custom', path: [name], message: `header ${name} cannot be set on a probe` });
      }
      if (seen.has(lower)) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: `header ${name} is given twice (names ignore case)`,
        });
      }
      seen.add(lower);
      if (headers[name] === REDACTED) {
        // What GET shows in place of a stored value: sent back (a GET → PATCH round trip), it
        // would replace the real credential with the placeholder text.
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: `header value ${REDACTED} is the placeholder GET shows for a stored value, not a value; send the real value, or leave headers out of a PATCH to keep the stored ones`,
        });
      } else if (!HEADER_VALUE.test(headers[name]!)) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: 'header value must be at most 1000 visible ASCII characters, spaces or tabs',
        });
      }
    }
  });

const methodSchema = z.enum(['GET', 'HEAD'], { error: 'method must be GET or HEAD' });
const timeoutSchema = z
  .number({ error: 'timeout_ms must be a number' })
  .int({ error: 'timeout_ms must be a whole number' })
  .min(1, { error: 'timeout_ms must be at least 1' })
  .max(30_000, { error: 'timeout_ms must be at most 30000' });
const enabledSchema = z.boolean({ error: 'enabled must be true or false' });

/** POST /v1/providers body. */
export const createProviderBodySchema = z
  .object({
    name: nameSchema,
    url: urlSchema,
    method: methodSchema.default('GET'),
    expected_status: expectedStatusSchema.default({ min: 200, max: 399 }),
    timeout_ms: timeoutSchema.default(2000),
    headers: headersSchema.optional(),
    enabled: enabledSchema.default(true),
  })
  .strict();

/** PATCH /v1/providers/:id body: any subset of the create fields; `headers: null` clears them. */
export const patchProviderBodySchema = z
  .object({
    name: nameSchema.optional(),
    url: urlSchema.optional(),
    method: methodSchema.optional(),
    expected_status: expectedStatusSchema.optional(),
    timeout_ms: timeoutSchema.optional(),
    headers: headersSchema.nullable().optional(),
    enabled: enabledSchema.optional(),
  })
  .strict()
  .refine((v) => Object.keys(v).length > 0, { error: 'give at least one field to change' });

type CreateBody = z.output<typeof createProviderBodySchema>;
type PatchBody = z.output<typeof patchProviderBodySchema>;

export function providerConfigFromBody(b: CreateBody): ProviderConfig {
  return {
    name: b.name,
    url: b.url,
    method: b.method,
    expectedStatus: b.expected_status,
    timeoutMs: b.timeout_ms,
    headers: b.headers ?? null,
    enabled: b.enabled,
  };
}

export function providerPatchFromBody(b: PatchBody): Partial<ProviderConfig> {
  const p: Partial<ProviderConfig> = {};
  if (b.name !== undefined) p.name = b.name;
  if (b.url !== undefined) p.url = b.url;
  if (b.method !== undefined) p.method = b.method;
  if (b.expected_status !== undefined) p.expectedStatus = b.expected_status;
  if (b.timeout_ms !== undefined) p.timeoutMs = b.timeout_ms;
  if (b.headers !== undefined) p.headers = b.headers;
  if (b.enabled !== undefined) p.enabled = b.enabled;
  return p;
}

/** POST /v1/probes/runs body: optional and empty. */
export const createProbeRunBodySchema = z.preprocess((v) => v ?? {}, z.object({}).strict());

/** Stored extra headers; values are never shown (they often carry credentials). */
export function parseProviderHeaders(text: string | null): Record<string, string> | null {
  if (text === null) return null;
  try {
    return JSON.parse(text) as Record<string, string>;
  } catch {
    return null;
  }
}

export interface ProviderView {
  id: string;
  name: string;
  url: string;
  method: 'GET' | 'HEAD';
  expected_status: { min: number; max: number };
  timeout_ms: number;
  /** Header names with their values redacted. */
  headers: Record<string, string>;
  enabled: boolean;
  state: ProviderRow['state'];
  created_at: string | null;
  updated_at: string | null;
}

export function providerView(row: ProviderRow): ProviderView {
  const headers = parseProviderHeaders(row.headers) ?? {};
  return {
    id: row.id,
    name: row.name,
    url: row.url,
    method: row.method,
    expected_status: { min: Number(row.expected_status_min), max: Number(row.expected_status_max) },
    timeout_ms: Number(row.timeout_ms),
    headers: Object.fromEntries(Object.keys(headers).map((k) => [k, REDACTED])),
    enabled: Number(row.enabled) === 1,
    state: row.state,
    created_at: rfc3339(row.created_at),
    updated_at: rfc3339(row.updated_at),
  };
}

export interface ProbeSampleView {
  ok: boolean;
  status_code: number | null;
  latency_ms: number;
  error_class: string | null;
  checked_at: string | null;
  run_id: string | null;
}

export interface ProviderHealthView {
  provider_id: string;
  state: ProviderRow['state'];
  since: string | null;
  last_checked_at: string | null;
  latency_ms: number | null;
  consecutive_failures: number;
  consecutive_successes: number;
  /** Up to 50 samples, newest first. */
  recent: ProbeSampleView[];
}

export const HEALTH_RECENT_SAMPLES = 50;

export function providerHealthView(row: ProviderRow, samples: readonly ProbeSampleRow[]): ProviderHealthView {
  return {
    provider_id: row.id,
    state: row.state,
    since: rfc3339(row.state_since),
    last_checked_at: rfc3339(row.last_checked_at),
    latency_ms: row.last_latency_ms === null ? null : Number(row.last_latency_ms),
    consecutive_failures: Number(row.consecutive_failures),
    consecutive_successes: Number(row.consecutive_successes),
    recent: samples.map((s) => ({
      ok: Number(s.ok) === 1,
      status_code: s.status_code === null ? null : Number(s.status_code),
      latency_ms: Number(s.latency_ms),
      error_class: s.error_class,
      checked_at: rfc3339(s.checked_at),
      run_id: s.run_id,
    })),
  };
}

export interface ProbeRunView {
  id: string;
  trigger: ProbeRunRow['trigger'];
  status: ProbeRunRow['status'];
  probed: number;
  failed: number;
  error: string | null;
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  /** A manual cycle's BullMQ job in queue `probes`; null for a scheduled one (a scheduler's tick). */
  job_id: string | null;
}

export function probeRunView(row: ProbeRunRow): ProbeRunView {
  return {
    id: row.id,
    trigger: row.trigger,
    status: row.status,
    probed: Number(row.probed),
    failed: Number(row.failed),
    error: row.error,
    created_at: rfc3339(row.created_at),
    started_at: rfc3339(row.started_at),
    finished_at: rfc3339(row.finished_at),
    job_id: row.trigger === 'manual' ? probeRunJobId(row.id) : null,
  };
}
