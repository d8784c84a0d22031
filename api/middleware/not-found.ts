import type { RequestHandler } from 'express';
import { MethodNotAllowedError, NotFoundError } from '../../shared/errors';

/** Last route: nothing matched the path → 404 `not-found`. */
export function notFound(): RequestHandler {
  return (req) => {
    // baseUrl: under a mounted router (the board) req.path is relative to the mount point.
    throw new NotFoundError(`There is no resource at ${req.method} ${truncate(req.baseUrl + req.path)}.`);
  };
}

/**
 * Catch-all of a known path (`router.route(p).get(...).all(methodNotAllowed([...]))`):
 * another method → 405 `method-not-allowed` with `Allow`; OPTIONS → 204 with `Allow`.
 */
export function methodNotAllowed(allowed: readonly string[]): RequestHandler {
  const list = [...new Set([...allowed, ...(allowed.includes('GET') ? ['HEAD'] : []), 'OPTIONS'])];
  return (req, res) => {
    if (req.method === 'OPTIONS') {
      res.setHeader('Allow', list.join(', '));
      res.status(204).end();
      return;
    }
    throw new MethodNotAllowedError(`${req.method} is not allowed here; allowed: ${list.join(', ')}.`, list);
  };
}

function truncate(path: string): string {
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}
