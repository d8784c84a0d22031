import { redactUrl } from './logger';

/** A Postgres schema name taskyard accepts in `?schema=` (unquoted identifier rules). */
export const PG_SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Parameters (lower-cased) that look like a schema choice; pg ignores them all, and only `schema` as spelled is ours. */
const SCHEMA_LOOKALIKES = new Set(['schema', 'search_path', 'searchpath', 'currentschema', 'current_schema']);

/** What to do about a database or Redis URL that does not parse. */
export const URL_ENCODING_ADVICE =
  'percent-encode reserved characters in the user name and password (e.g. # as %23, @ as %40, / as %2F)';

/** A Postgres URL split into what pg is given and taskyard's own parameters. */
export interface PostgresUrl {
  /** The URL without `schema` and `relaxed_commits` (pg would hand them to the server). */
  connectionString: string;
  schema: string | null;
  relaxedCommits: boolean;
  /** The URL with its secrets masked, for logs and errors. */
  displayUrl: string;
}

/**
 * Parse a `postgres://` URL: the configuration check, the pool and the backup snapshot read
 * it the same way, so a URL the check accepts is one the pool opens.
 * @throws Error naming what is wrong, never the URL itself (the configuration check shows the
 *   message under "DATABASE_URL=(value hidden)").
 */
export function parsePostgresUrl(url: string): PostgresUrl {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Node's error carries the whole input, password included: it must not reach a log.
    throw new Error(`the Postgres URL is not a valid URL: ${URL_ENCODING_ADVICE}`);
  }
  for (const name of parsed.searchParams.keys()) {
    // pg reads none of these: the tables would silently go into the default schema (public).
    if (name !== 'schema' && SCHEMA_LOOKALIKES.has(name.toLowerCase())) {
      throw new Error(`the Postgres URL parameter ${name}= is not read; name the schema with ?schema=<name>`);
    }
  }
  const schema = parsed.searchParams.get('schema');
  const relaxedCommits = parsed.searchParams.get('relaxed_commits') ?? 'on';
  parsed.searchParams.delete('schema');
  parsed.searchParams.delete('relaxed_commits');
  const displayUrl = redactUrl(url);
  if (relaxedCommits !== 'on' && relaxedCommits !== 'off') {
    throw new Error(
      `invalid relaxed_commits "${relaxedCommits.slice(0, 20)}": relaxed_commits= must be on or off`,
    );
  }
  if (schema !== null && !PG_SCHEMA_NAME.test(schema)) {
    throw new Error(
      `invalid schema "${schema.slice(0, 70)}": schema= must be 1-63 letters, digits or _, not starting with a digit`,
    );
  }
  return { connectionString: parsed.toString(), schema, relaxedCommits: relaxedCommits === 'on', displayUrl };
}
