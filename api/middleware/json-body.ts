import { isUtf8 } from 'node:buffer';
import type { IncomingHttpHeaders } from 'node:http';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { UnsupportedMediaTypeError, ValidationFailedError, type ValidationIssue } from '../../shared/errors';

/** `application/json` and any `+json` suffix type (e.g. `application/merge-patch+json`), any parameters. */
const JSON_MEDIA_TYPE = /^application\/(?:json|[A-Za-z0-9!#$&^_.-]+\+json)\s*(?:;|$)/i;

/** Whether the request carries body bytes (an explicit `Content-Length: 0` is no body). */
function hasBody(headers: IncomingHttpHeaders): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const length = headers['content-length'];
  return length !== undefined && length !== '0';
}

/**
 * Request bodies are JSON ≤ `limitBytes` (DESIGN.md §5). A body of another media type → 415
 * `unsupported-media-type`; malformed JSON → 400 `validation-failed` saying where (mapped by
 * the problem middleware from body-parser's `entity.parse.failed`); too big → 413
 * `payload-too-large`; bytes that are not UTF-8, or a string holding U+0000 or an unpaired surrogate → 400
 * `validation-failed` naming the field. The parser takes an object or array; every route then
 * requires an object.
 *
 * The body is read here, for every route, but a refusal is only kept on `req.bodyError`:
 * `requireScope` throws it after the scope check (DESIGN.md §3: auth, then validate), and
 * `validate` too, for a route that has no scope check of its own.
 */
export function jsonBody(opts: { limitBytes: number }): RequestHandler {
  const requireJson: RequestHandler = (req, _res, next) => {
    if (!hasBody(req.headers)) return next();
    const type = req.headers['content-type'];
    if (type === undefined || !JSON_MEDIA_TYPE.test(type)) {
      throw new UnsupportedMediaTypeError(
        `Request bodies must be application/json (got ${type === undefined ? 'no Content-Type' : describeMediaType(type)}).`,
      );
    }
    // body-parser decodes any utf-* charset, so UTF-16 would arrive as garbage and be
    // reported as malformed JSON; say what is wrong instead.
    const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(type)?.[1]?.toLowerCase();
    if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
      throw new UnsupportedMediaTypeError(
        `Request bodies must be JSON encoded as UTF-8 (got charset=${describeMediaType(charset) || 'nothing'}); send UTF-8 or leave the charset out.`,
      );
    }
    next();
  };
  const parse = express.json({
    limit: opts.limitBytes,
    strict: true,
    type: () => true,
    // Decoding would turn each invalid byte into U+FFFD, stored as if the client had sent it.
    verify: (_req, _res, raw) => {
      if (!isUtf8(raw)) {
        throw new ValidationFailedError([
          { path: 'body', message: 'is not valid UTF-8; send the body encoded as UTF-8' },
        ]);
      }
    },
  });
  const storable: RequestHandler = (req, _res, next) => {
    if (req.body !== undefined) {
      const issues = unstorableText(req.body);
      if (issues.length > 0) throw new ValidationFailedError(issues);
    }
    next();
  };
  // A router of its own: its error handler sees only the errors of these three steps (an
  // error from before the router skips it), keeps the refusal and lets the request go on.
  const router = express.Router();
  router.use(requireJson, parse, storable, keepBodyError);
  return router;
}

const keepBodyError: ErrorRequestHandler = (err, req, _res, next) => {
  req.bodyError = err;
  req.body = undefined;
  next();
};

/** Throws the body's refusal, if any: for chains whose authentication already fixed the scope. */
export const refuseBadBody: RequestHandler = (req, _res, next) => {
  if (req.bodyError !== undefined) throw req.bodyError;
  next();
};

/** The media type a client sent, fit to echo: its type/subtype only, printable and short. */
function describeMediaType(header: string): string {
  const type = header.split(';', 1)[0]!.trim().slice(0, 100);
  return /^[\x21-\x7e]+$/.test(type) ? type : 'an unreadable media type';
}

/** U+0000, or a UTF-16 surrogate without its pair. */
// eslint-disable-next-line no-control-regex -- U+0000 is exactly what this refuses
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Strings (values and keys) that no database stores as sent: Postgres refuses U+0000 in text
 * (the insert would fail with a 500), and an unpaired surrogate is not Unicode (Postgres
 * would get U+FFFD, SQLite invalid UTF-8). Refused here once for every route, so no field
 * can reach a database with one.
 */
function unstorableText(body: unknown): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  // Iterative, with paths built only for what is reported: a body may nest thousands deep.
  const stack: { value: unknown; at: PathNode }[] = [{ value: body, at: { seg: 'body' } }];
  while (stack.length > 0 && issues.length < 10) {
    const { value, at } = stack.pop()!;
    if (typeof value === 'string') {
      if (UNSTORABLE.test(value)) issues.push({ path: pathOf(at), message: describe(value) });
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--)
        stack.push({ value: value[i], at: { up: at, seg: `[${i}]` } });
    } else if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value);
      for (const [k] of entries) {
        if (UNSTORABLE.test(k)) issues.push({ path: `${pathOf(at)} (a key)`, message: describe(k) });
      }
      for (let i = entries.length - 1; i >= 0; i--) {
        const [k, v] = entries[i]!;
        if (!UNSTORABLE.test(k)) stack.push({ value: v, at: { up: at, seg: `.${k}` } });
      }
    }
  }
  return issues;
}

interface PathNode {
  up?: PathNode;
  seg: string;
}

function pathOf(node: PathNode): string {
  const segs: string[] = [];
  for (let n: PathNode | undefined = node; n; n = n.up) segs.push(n.seg);
  return segs.reverse().join('');
}

function describe(text: string): string {
  return text.includes('\u0000')
    ? 'contains a NUL character (\\u0000), which cannot be stored; remove it'
    : 'contains an unpaired UTF-16 surrogate, which is not valid Unicode; send well-formed text';
}
