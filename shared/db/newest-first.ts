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
  let page = q;
  if (opts.after) {
    const { createdAt, id } = opts.after;
    // A row-value comparison: both backends turn it into one range seek on (created_at, id).
    page = page.where(sql<boolean>`(created_at, id) < (${createdAt}, ${id})`);
  }
  return page
    .orderBy(sql`created_at`, 'desc')
    .orderBy(sql`id`, 'desc')
    .limit(opts.limit);
}

/**
 * One oldest-first page, ordered by (created_at, id) ascending, starting after `after`: how
 * the reconciler walks every unfinished row a bounded page at a time.
 */
export function oldestFirst<DB, TB extends keyof DB, O>(
  q: SelectQueryBuilder<DB, TB, O>,
  opts: { limit: number; after?: KeysetAfter },
): SelectQueryBuilder<DB, TB, O> {
  let page = q;
  if (opts.after) {
    const { createdAt, id } = opts.after;
    page = page.where(sql<boolean>`(created_at, id) > (${createdAt}, ${id})`);
  }
  return page
    .orderBy(sql`created_at`)
    .orderBy(sql`id`)
    .limit(opts.limit);
}
