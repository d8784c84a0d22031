import { randomUUID } from 'node:crypto';
import type { ErrorRequestHandler, Response } from 'express';
import { PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX } from '../../shared/contract/problem';
import { isDatabaseUnavailable } from '../../shared/db/unavailable';
import {
  DependencyUnavailableError,
  InternalError,
  MalformedJsonError,
  MethodNotAllowedError,
  NotFoundError,
  PayloadTooLargeError,
  ProblemError,
  UnsupportedMediaTypeError,
} from '../../shared/errors';
import type { Logger } from '../../shared/logger';
import { findJsonSyntaxProblem } from './json-syntax';

/** An RFC 9457 document as sent: the standard members, then the slug's own. */
export type ProblemDocument = {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance: string;
} & Record<string, unknown>;

/** The problem document for an error; `extra` never overrides the standard members. */
export function problemDocument(err: ProblemError, instance: string): ProblemDocument {
  return {
    ...err.extra,
    type: `${PROBLEM_TYPE_PREFIX}${err.slug}`,
    title: err.title,
    status: err.status,
    detail: err.message,
    instance,
  };
}

/** Write a problem response (status, its headers, problem+json body). */
export function sendProblem(res: Response, err: ProblemError, instance: string): void {
  for (const [name, value] of Object.entries(err.headers)) res.setHeader(name, value);
  res
    .status(err.status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(JSON.stringify(problemDocument(err, instance)));
}

/**
 * The raw HTTP response for errors Node raises before Express sees a request (header too
 * large, malformed request line): written straight to the socket by the server's
 * `clientError` handler.
 */
export function rawProblemResponse(err: ProblemError, statusText: string): string {
  const instance = randomUUID();
  const body = JSON.stringify(problemDocument(err, instance));
  return [
    `HTTP/1.1 ${err.status} ${statusText}`,
    `Content-Type: ${PROBLEM_CONTENT_TYPE}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    `X-Request-Id: ${instance}`,
    'Connection: close',
    '',
    body,
  ].join('\r\n');
}

class BadRequestError extends ProblemError {
  readonly slug = 'validation-failed';
  readonly status = 400;
  readonly title = 'Bad request';
}

/** The `type` member body-parser / raw-body put on their errors. */
interface HttpLibraryError {
  status?: unknown;
  statusCode?: unknown;
  type?: unknown;
  expose?: unknown;
  body?: unknown;
  limit?: unknown;
}

/**
 * Map anything thrown to a ProblemError. Errors from body-parser, raw-body and the router
 * (http-errors with a 4xx status) become the matching client problem with our own
 * wording; everything else is `undefined`, i.e. an internal error.
 */
export function toProblemError(err: unknown): ProblemError | undefined {
  if (err instanceof ProblemError) return err;
  if (typeof err !== 'object' || err === null) return undefined;
  if (isDatabaseUnavailable(err)) {
    return new DependencyUnavailableError(
      'The database is unavailable (restarting, unreachable or busy); retry later.',
      5,
      err,
    );
  }
  const e = err as HttpLibraryError;
  switch (e.type) {
    case 'entity.parse.failed': {
      const text = typeof e.body === 'string' ? e.body : '';
      const where = findJsonSyntaxProblem(text);
      return new MalformedJsonError(
        where
          ? `The request body is not valid JSON: ${where.reason} at line ${where.line}, column ${where.column} (offset ${where.offset}).`
          : 'The request body must be a JSON object.',
      );
    }
    case 'entity.too.large':
      return new PayloadTooLargeError(
        `The request body exceeds the limit of ${typeof e.limit === 'number' ? e.limit : 'the configured'} bytes.`,
      );
    case 'charset.unsupported':
      return new UnsupportedMediaTypeError('The request body must be JSON encoded as UTF-8.');
    case 'encoding.unsupported':
      return new UnsupportedMediaTypeError(
        'The request body uses an unsupported Content-Encoding (use identity, gzip, deflate or br).',
      );
    case 'request.aborted':
      return new BadRequestError('The request body ended before Content-Length bytes arrived.');
    case 'request.size.invalid':
      return new BadRequestError('The request body length does not match Content-Length.');
  }
  const status =
    typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 0;
  if (status < 400 || status > 499) return undefined;
  if (err instanceof URIError) return new BadRequestError('The request path is not valid percent-encoding.');
  // zlib's codes (Z_DATA_ERROR, Z_BUF_ERROR, …) and brotli's (ERR__ERROR_FORMAT_…,
  // ERR_BROTLI_…): the body does not decode as its Content-Encoding says.
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^(Z_|ERR__ERROR_|ERR_BROTLI)/.test(code)) {
    return new BadRequestError(
      'The request body does not decode as its Content-Encoding says (e.g. not gzip data under Content-Encoding: gzip, or not brotli under br); send it as it is, without Content-Encoding, or encode it as declared.',
    );
  }
  switch (status) {
    case 404:
      return new NotFoundError('No such resource.');
    case 405:
      return new MethodNotAllowedError('Method not allowed.', []);
    case 413:
      return new PayloadTooLargeError('The request body is too large.');
    case 415:
      return new UnsupportedMediaTypeError('The request body has an unsupported media type.');
    default:
      return new BadRequestError('The request could not be understood.');
  }
}

/**
 * The one error middleware (CONVENTIONS.md): every error becomes RFC 9457 problem+json
 * with `instance` = request id. Unknown errors are logged with their cause at error level
 * and answered with a generic 500: no message, stack or SQL reaches the client.
 */
export function problemHandler(fallbackLogger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const log = req.log ?? fallbackLogger;
    let problem = toProblemError(err);
    if (!problem) {
      log.error({ err }, 'request failed');
      problem = new InternalError('An internal error occurred; it has been logged with this request id.');
    } else if (problem.status < 500) {
      log.debug({ problem: problem.slug, status: problem.status }, 'request rejected');
    } else {
      log.warn({ err, problem: problem.slug, status: problem.status }, 'request failed');
    }
    if (res.headersSent) {
      // Part of a response is on the wire: the only honest signal left is a cut connection.
      res.destroy();
      return;
    }
    sendProblem(res, problem, req.id ?? randomUUID());
  };
}
