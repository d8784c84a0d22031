import type { RequestHandler } from 'express';
import { listQuerySchema, uuidParamSchema } from '../shared/contract/common';
import type { KeysetAfter } from '../shared/db/newest-first';
import { NotFoundError } from '../shared/errors';
import { keysetPage, listName } from './keyset-page';
import { requireScope } from './middleware/auth';
import { validate, validated } from './middleware/validate';

/**
 * The two read routes every UUID-keyed resource has (DESIGN.md §5), scope `read`: the
 * newest-first list and the get-by-id. Routes with other keys or filters (simulations)
 * build theirs from keysetPage directly.
 */

const listSchemas = { query: listQuerySchema };
const oneSchemas = { params: uuidParamSchema };

/** GET <collection>: `limit`/`cursor`, newest first. */
export function listNewestFirst<R extends { created_at: number; id: string }, V>(
  fetch: (opts: { limit: number; after?: KeysetAfter }) => Promise<R[]>,
  view: (row: R) => V,
): RequestHandler[] {
  return [
    requireScope('read'),
    validate(listSchemas),
    async (req, res) => {
      const { query } = validated(req, listSchemas);
      res.json(await keysetPage(query, listName(req), fetch, view));
    },
  ];
}

/** GET <collection>/:id; 404 naming `what` (e.g. "backup") when there is no such row. */
export function getById<R, V>(
  what: string,
  fetch: (id: string) => Promise<R | undefined>,
  view: (row: R) => V,
): RequestHandler[] {
  return [
    requireScope('read'),
    validate(oneSchemas),
    async (req, res) => {
      const { params } = validated(req, oneSchemas);
      const row = await fetch(params.id);
      if (!row) throw new NotFoundError(`There is no ${what} with id ${params.id}.`);
      res.json(view(row));
    },
  ];
}
