import type { Request, RequestHandler } from 'express';
import type { z } from 'zod';
import { ValidationFailedError, type ValidationIssue } from '../../shared/errors';

/** zod schemas for the parts of a request a route reads (shared/contract/ holds them). */
export interface RequestSchemas {
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

/** What `validated()` returns for given schemas: the parsed, typed values. */
export interface Validated<S extends RequestSchemas> {
  params: Out<S['params']>;
  query: Out<S['query']>;
  body: Out<S['body']>;
}

const PARTS = ['params', 'query', 'body'] as const;

function issuePath(part: string, path: readonly PropertyKey[]): string {
  return [part, ...path.map((p) => (typeof p === 'symbol' ? p.toString() : String(p)))].join('.');
}

/** zod's own text for a missing field is "expected object, received undefined": say what it means. */
function messageOf(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) {
    return `is required (${issue.expected})`;
  }
  return issue.message;
}

/** zod's issues as the `errors` of a 400, under `part` (e.g. `body.options.attempts`). */
export function validationIssues(part: string, issues: readonly z.core.$ZodIssue[]): ValidationIssue[] {
  return issues.map((issue) => ({ path: issuePath(part, issue.path), message: messageOf(issue) }));
}

/**
 * Parse params, query and body with zod (DESIGN.md §3 step 2). Every problem of every part
 * is listed at once: 400 `validation-failed` with `errors: [{path, message}]`, paths like
 * `params.queue`. On success the parsed values are on `req.valid`; read them with `validated()`.
 */
export function validate<S extends RequestSchemas>(schemas: S): RequestHandler {
  return (req, _res, next) => {
    if (req.bodyError !== undefined) throw req.bodyError;
    const errors: ValidationIssue[] = [];
    const valid: NonNullable<Request['valid']> = {};
    for (const part of PARTS) {
      const schema = schemas[part];
      if (!schema) continue;
      const result = schema.safeParse(req[part] ?? (part === 'body' ? undefined : {}));
      if (result.success) valid[part] = result.data;
      else errors.push(...validationIssues(part, result.error.issues));
    }
    if (errors.length > 0) throw new ValidationFailedError(errors);
    req.valid = valid;
    next();
  };
}

/** The values `validate(schemas)` parsed for this request. @throws Error when validate did not run. */
export function validated<S extends RequestSchemas>(req: Request, _schemas: S): Validated<S> {
  if (!req.valid) throw new Error('validated() called on a route without the validate() middleware');
  return req.valid as Validated<S>;
}
