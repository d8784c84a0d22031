import { decodeCursor, encodeCursor, type KeysetCursor } from '../shared/contract/common';
import { ValidationFailedError } from '../shared/errors';

export interface Page<V> {
  items: V[];
  next_cursor: string | null;
}

/**
 * One page of a newest-first list (DESIGN.md §5): asks the store for `limit + 1` rows after
 * the cursor, so whether a next page exists is known without a count.
 * @throws ValidationFailedError (400) for a cursor this api did not issue
 */
export async function keysetPage<R extends { created_at: number; id: string }, V>(
  query: { limit: number; cursor?: string | undefined },
  fetch: (opts: { limit: number; after?: KeysetCursor }) => Promise<R[]>,
  view: (row: R) => V,
): Promise<Page<V>> {
  const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
  if (query.cursor !== undefined && !after) {
    throw new ValidationFailedError([
      {
        path: 'query.cursor',
        message: 'cursor is not one this api issued; omit it to start from the newest',
      },
    ]);
  }
  const rows = await fetch({ limit: query.limit + 1, after });
  const page = rows.slice(0, query.limit);
  const last = page.at(-1);
  return {
    items: page.map(view),
    next_cursor:
      rows.length > query.limit && last
        ? encodeCursor({ createdAt: Number(last.created_at), id: last.id })
        : null,
  };
}
