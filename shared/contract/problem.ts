import { z } from 'zod';

/** Prefix of every problem `type` (DESIGN.md §4.7). */
export const PROBLEM_TYPE_PREFIX = 'urn:taskyard:problem:';

/** Media type of every error response (RFC 9457). */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** One invalid field of a request, as listed in a `validation-failed` problem. */
export const validationIssueSchema = z.object({
  /** Where: `params.queue`, `query.limit`, `body.label`. */
  path: z.string(),
  message: z.string(),
});

/**
 * An RFC 9457 problem document. `instance` is the request id (also in `X-Request-Id`).
 * Members per slug (e.g. `errors`, `checks`, `known_queues`) pass through.
 */
export const problemSchema = z.looseObject({
  type: z.string().startsWith(PROBLEM_TYPE_PREFIX),
  title: z.string(),
  status: z.number().int().min(400).max(599),
  detail: z.string(),
  instance: z.string(),
  errors: z.array(validationIssueSchema).optional(),
});

export type Problem = z.infer<typeof problemSchema>;
