import type { Request } from 'express';
import { decodeCursor, encodeCursor, type KeysetCursor } from '../shared/contract/common';
import { ValidationFailedError } from '../shared/errors';

export interface Page<V> {
  items: V[];
  next_cursor: string | null;
}

/**
 * The list a request pages over, for binding its cursors: the route's path, e.g. `GET /v1/backups`.
 * A list under a route parameter (none yet) would need the parameter's value in its name.
 */
export function listName(req: Request): string {
  return `GET ${req.baseUrl}${(req.route as { path: string }).path}`;
}

/**
 * One page of a newest-first list (DESIGN.md §5): asks the store for `limit + 1` rows after
 * the cursor, so whether a next page exists is known without a count.
 * @param list what this list is (its path, and its filters when it has any); the cursor it
 *   issues names it, and a cursor naming another list is refused.
 * @throws ValidationFailedError (400) for a cursor this api did not issue, or issued for another list
 */
export async function keysetPage<R extends { created_at: number; id: string }, V>(
  query: { limit: number; cursor?: string | undefined },
  list: string,
  fetch: (opts: { limit: number; after?: KeysetCursor }) => Promise<R[]>,
  view: (row: R) => V,
): Promise<Page<V>> {
  const decoded = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
  if (query.cursor !== undefined && !decoded) {
    throw new ValidationFailedError([
      {
        path: 'query.cursor',
        message: 'cursor is not one this api issued; omit it to start from the newest',
      },
    ]);
  }
  if (decoded?.list !== undefined && decoded.list !== list) {
    throw new ValidationFailedError([
      {
        path: 'query.cursor',
        message: `cursor was issued for ${decoded.list}, not ${list}; pass each list its own next_cursor, or omit it to start from the newest`,
      },
    ]);
  }
  const rows = await fetch({ limit: query.limit + 1, after: decoded?.after });
  const page = rows.slice(0, query.limit);
  const last = page.at(-1);
  return {
    items: page.map(view),
    next_cursor:
      rows.length > query.limit && last
        ? encodeCursor({ createdAt: Number(last.created_at), id: last.id }, list)
        : null,
  };
}
