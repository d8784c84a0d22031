import type { IncomingHttpHeaders } from 'node:http';
import express, { type RequestHandler } from 'express';
import { UnsupportedMediaTypeError } from '../../shared/errors';

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
 * `payload-too-large`. The top level must be an object or array.
 */
export function jsonBody(opts: { limitBytes: number }): RequestHandler[] {
  const requireJson: RequestHandler = (req, _res, next) => {
    if (!hasBody(req.headers)) return next();
    const type = req.headers['content-type'];
    if (type === undefined || !JSON_MEDIA_TYPE.test(type)) {
      throw new UnsupportedMediaTypeError(
        `Request bodies must be application/json (got ${type === undefined ? 'no Content-Type' : 'another media type'}).`,
      );
    }
    next();
  };
  const parse = express.json({ limit: opts.limitBytes, strict: true, type: () => true });
  return [requireJson, parse];
}
