import { sql, type SelectQueryBuilder } from 'kysely';

/** Where a newest-first page resumes: the last row of the previous page. */
export interface KeysetAfter {
  createdAt: number;
  id: string;
}

/**
 * One newest-first page of a table with `created_at` and `id` columns (DESIGN.md §5 lists):
 * ordered by (created_at, id) descending, starting after `after`, at most `limit` rows.
 * `id` breaks ties, so rows created in the same millisecond are neither skipped nor repeated.
 */
export function newestFirst<DB, TB extends keyof DB, O>(
  q: SelectQueryBuilder<DB, TB, O>,
  opts: { limit: number; after?: KeysetAfter },
): SelectQueryBuilder<DB, TB, O> {
  return keysetPage(q, opts, 'desc');
}

/**
 * One oldest-first page, ordered by (created_at, id) ascending, starting after `after`: how
 * the reconciler walks every unfinished row a bounded page at a time.
 */
export function oldestFirst<DB, TB extends keyof DB, O>(
  q: SelectQueryBuilder<DB, TB, O>,
  opts: { limit: number; after?: KeysetAfter },
): SelectQueryBuilder<DB, TB, O> {
  return keysetPage(q, opts, 'asc');
}

function keysetPage<DB, TB extends keyof DB, O>(
  q: SelectQueryBuilder<DB, TB, O>,
  opts: { limit: number; after?: KeysetAfter },
  order: 'asc' | 'desc',
): SelectQueryBuilder<DB, TB, O> {
  let page = q;
  if (opts.after) {
    const { createdAt, id } = opts.after;
    // A row-value comparison: both backends turn it into one range seek on (created_at, id).
    page = page.where(
      order === 'desc'
        ? sql<boolean>`(created_at, id) < (${createdAt}, ${id})`
        : sql<boolean>`(created_at, id) > (${createdAt}, ${id})`,
    );
  }
  return page
    .orderBy(sql`created_at`, order)
    .orderBy(sql`id`, order)
    .limit(opts.limit);
}
