/** Query parameters that carry secrets in database and Redis URLs (libpq, pg, ioredis). */
const SECRET_PARAM = /pass|secret|token|key|auth/i;

/**
 * Remove credentials from a URL before it is logged or shown: the password of the userinfo
 * and every query parameter whose name says it holds one (`?password=`, `sslkey=`, …). A URL
 * that does not parse is not shown at all: where its password ends cannot be known.
 */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
    return scheme ? `${scheme}:(unparseable URL, not shown)` : '(unparseable URL, not shown)';
  }
  if (u.password) u.password = '***';
  for (const name of [...u.searchParams.keys()]) {
    if (SECRET_PARAM.test(name)) u.searchParams.set(name, '***');
  }
  return u.toString();
}
