import type { Request, RequestHandler } from 'express';
import type { Kysely } from 'kysely';
import { findActiveApiKeyByHash, hashApiKey } from '../../shared/db/api-keys';
import type { Database } from '../../shared/db/schema';
import { DependencyUnavailableError, ForbiddenError, UnauthorizedError } from '../../shared/errors';
import { scopeGrants, type Principal, type Scope } from '../../shared/types';

/** Longer Authorization headers are refused before any hashing or lookup. */
export const MAX_AUTHORIZATION_LENGTH = 512;

const BEARER = /^Bearer +([\x21-\x7e]+) *$/i;
const BASIC = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i;

/** 401 for the Bull Board: a Basic challenge, so a browser shows its login prompt. */
export class BasicAuthRequiredError extends UnauthorizedError {
  constructor(detail: string) {
    super(detail);
    // Basic first, so a browser prompts; Bearer too, which the board also accepts (RFC 9110 §11.6.1).
    this.headers['WWW-Authenticate'] = 'Basic realm="taskyard", charset="UTF-8", Bearer realm="taskyard"';
  }
}

type Challenge = (detail: string) => UnauthorizedError;
const bearerChallenge: Challenge = (detail) => new UnauthorizedError(detail);
const basicChallenge: Challenge = (detail) => new BasicAuthRequiredError(detail);

/**
 * The key a request presents: `Bearer <key>`, or (when `allowBasic`) Basic credentials whose
 * password is the key, any username. The key is never put into an error or a log line.
 */
function presentedKey(req: Request, allowBasic: boolean, challenge: Challenge): string {
  const header = req.headers.authorization;
  const expected = allowBasic
    ? "'Bearer <key>' or Basic credentials with the key as password"
    : "'Bearer <key>'";
  if (header === undefined || header === '') {
    throw challenge(`Authentication is required: send Authorization: ${expected}.`);
  }
  // Node keeps the first of several Authorization headers and drops the rest: which one a
  // proxy or a client meant is anyone's guess, so none is taken.
  if ((req.headersDistinct.authorization?.length ?? 0) > 1) {
    throw challenge('Send one Authorization header, not several.');
  }
  if (header.length > MAX_AUTHORIZATION_LENGTH) {
    throw challenge(`The Authorization header is longer than ${MAX_AUTHORIZATION_LENGTH} characters.`);
  }
  const bearer = BEARER.exec(header);
  if (bearer) return bearer[1]!;
  if (allowBasic) {
    const basic = BASIC.exec(header);
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const password = colon === -1 ? '' : decoded.slice(colon + 1);
      if (password !== '') return password;
    }
  }
  throw challenge(`The Authorization header is malformed: send ${expected}.`);
}

async function principalFor(db: Kysely<Database>, key: string, challenge: Challenge): Promise<Principal> {
  let row: Awaited<ReturnType<typeof findActiveApiKeyByHash>>;
  try {
    row = await findActiveApiKeyByHash(db, hashApiKey(key));
  } catch (err) {
    throw new DependencyUnavailableError('The key store (database) did not answer; retry later.', 5, err);
  }
  // Unknown and revoked keys get the same answer: nothing tells a guesser which it was.
  if (!row) throw challenge('The API key is not valid.');
  return { id: row.id, name: row.name, scopes: row.scopes };
}

/**
 * `Authorization: Bearer <key>` → `req.principal`. Missing, malformed, over-long, unknown or
 * revoked → 401 `unauthorized` with `WWW-Authenticate: Bearer`.
 */
export function authenticate(deps: { db: Kysely<Database> }): RequestHandler {
  return async (req, _res, next) => {
    const key = presentedKey(req, false, bearerChallenge);
    req.principal = await principalFor(deps.db, key, bearerChallenge);
    next();
  };
}

/**
 * Admin authentication for the Bull Board: Bearer, or Basic whose password is an admin key.
 * Failures challenge with `WWW-Authenticate: Basic realm="taskyard"` so a browser prompts
 * (and then re-sends the credentials for every asset); a non-admin key → 403.
 */
export function authenticateAdminBoard(deps: { db: Kysely<Database> }): RequestHandler {
  const scopeCheck = requireScope('admin');
  return async (req, res, next) => {
    const key = presentedKey(req, true, basicChallenge);
    req.principal = await principalFor(deps.db, key, basicChallenge);
    scopeCheck(req, res, next);
  };
}

/** 403 `forbidden` naming the scope when the principal lacks it (admin ⊃ write ⊃ read). */
export function requireScope(scope: Scope): RequestHandler {
  return (req, _res, next) => {
    const principal = req.principal;
    if (!principal) throw new UnauthorizedError('Authentication is required.');
    if (!scopeGrants(principal.scopes, scope)) {
      throw new ForbiddenError(
        `This request needs the "${scope}" scope; the API key has: ${principal.scopes.join(', ') || '(none)'}.`,
        {
          extra: { required_scope: scope },
        },
      );
    }
    if (req.bodyError !== undefined) throw req.bodyError;
    next();
  };
}
