/**
 * Whether an error says the database cannot serve right now (a restart, an outage, a full
 * connection slot table, a lock held too long), as opposed to "this statement is wrong".
 * The api answers these with 503 and Retry-After instead of 500, so clients retry; the
 * idempotency claim is released like on any 5xx.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    if (isUnavailableItself(e as ErrorFields)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * A short, secret-free reason for a page anyone may read: the error's code, never its
 * message (a server's message names databases, users and hosts). The log has the rest.
 */
export function safeErrorReason(err: unknown): string {
  const e = (err ?? {}) as ErrorFields;
  if (typeof e.code === 'string' && /^[A-Z0-9_]{2,40}$/.test(e.code)) return e.code;
  const message = typeof e.message === 'string' ? e.message : '';
  return PG_CONNECTION_MESSAGES.some((m) => message.startsWith(m)) ? 'connection lost' : 'see the log';
}

interface ErrorFields {
  code?: unknown;
  severity?: unknown;
  message?: unknown;
}

/** Node's socket errors: the server is not reachable or went away. */
const NET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** Errors node-postgres raises without a code when a connection ends or cannot be had. */
const PG_CONNECTION_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  // A query on a client already ended after a FATAL error: Kysely's ROLLBACK of the failed
  // transaction meets it, and Kysely throws the rollback's error instead of the first.
  'Client was closed and is not queryable',
];

function isUnavailableItself(e: ErrorFields): boolean {
  const code = typeof e.code === 'string' ? e.code : '';
  if (NET_CODES.has(code)) return true;
  // SQLite: another connection held the write lock past busy_timeout.
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || code.startsWith('SQLITE_BUSY_')) return true;
  // Postgres: a FATAL error ends the session (shutdown, restart, connections refused);
  // class 08 is a connection exception, 57P0x an operator intervention, 53 insufficient resources.
  if (e.severity === 'FATAL' || e.severity === 'PANIC') return true;
  if (/^(08|53)[0-9A-Z]{3}$/.test(code) || /^57P0[1-3]$/.test(code)) return true;
  return (
    typeof e.message === 'string' && PG_CONNECTION_MESSAGES.some((m) => (e.message as string).startsWith(m))
  );
}
