import type { Request, RequestHandler, Response } from 'express';
import type { Kysely } from 'kysely';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import {
  claimIdempotencyKey,
  completeIdempotencyKey,
  releaseIdempotencyKey,
  type StoredResponse,
} from '../../shared/db/idempotency-store';
import type { Database } from '../../shared/db/schema';
import {
  ConflictError,
  IdempotencyKeyInFlightError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyMismatchError,
  IdempotencyKeyMissingError,
  toError,
} from '../../shared/errors';
import { parseIdempotencyKey, requestFingerprint } from '../../shared/idempotency';
import { PROBLEM_CONTENT_TYPE } from '../../shared/contract/problem';
import { isDatabaseUnavailable } from '../../shared/db/unavailable';

/** A claimed key, handed to the route so it can complete the claim inside its transaction. */
export interface IdempotencyClaim {
  key: string;
  /**
   * Store the response in the same transaction as the resource (DESIGN.md §3 step 4).
   * @throws ConflictError when the claim's lease lapsed and another request took it over:
   * the transaction must roll back so the work is not created twice.
   */
  complete(trx: Kysely<Database>, response: StoredResponse): Promise<void>;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by the idempotency middleware when the request carries a claimed key. */
      idempotency?: IdempotencyClaim;
    }
  }
}

/** In-flight claims lapse after this long, so a crashed holder's key can be taken over. */
export const IDEMPOTENCY_LEASE_MS = 30_000;

/**
 * DESIGN.md §4.1. Runs after auth and validation. Claims (principal, key) atomically and
 * then either replays a completed response, answers 409 in flight / 422 mismatch, or lets
 * the route run. Responses the route produced after the claim are stored (2xx and 4xx),
 * also when the client hung up before receiving them; a 5xx, or a route that answered
 * without a JSON body, releases the claim. A route that never answers keeps the claim until
 * its lease lapses.
 */
export function idempotency(
  deps: { db: Kysely<Database>; config: Pick<Config, 'IDEMPOTENCY_TTL_HOURS'>; clock: Clock },
  opts: { required: boolean },
): RequestHandler {
  const ttlMs = deps.config.IDEMPOTENCY_TTL_HOURS * 3_600_000;
  return async (req, res, next) => {
    const header = req.headersDistinct['idempotency-key'];
    const parsed = parseIdempotencyKey(header);
    if (!parsed.ok) {
      if (parsed.reason === 'missing') {
        if (!opts.required) return next();
        throw new IdempotencyKeyMissingError(
          'This request creates work and needs an Idempotency-Key header (e.g. a UUID); a retry with the same key returns the first response.',
        );
      }
      throw new IdempotencyKeyInvalidError(parsed.detail);
    }
    const principalId = req.principal?.id;
    if (!principalId) throw new Error('idempotency middleware runs after authentication');
    const key = parsed.key;
    const fingerprint = requestFingerprint(req.method, fingerprintPath(req), req.body);
    const claim = await claimIdempotencyKey(deps.db, {
      principalId,
      key,
      fingerprint,
      now: deps.clock.now().getTime(),
      leaseMs: IDEMPOTENCY_LEASE_MS,
      ttlMs,
    });
    switch (claim.outcome) {
      case 'completed':
        replay(res, claim.response);
        return;
      case 'in_flight':
        throw new IdempotencyKeyInFlightError(
          'A request with this Idempotency-Key is still being processed; retry after a second to get its result.',
        );
      case 'mismatch':
        throw new IdempotencyKeyMismatchError(
          'This Idempotency-Key was used for a different request (another body or path); use a new key for a new request.',
        );
      case 'corrupt':
        req.log.error({ idempotency_key_problem: claim.detail }, 'stored idempotency record is unreadable');
        throw new ConflictError(
          'The stored result for this Idempotency-Key cannot be read back; it is not trusted. Use a new key.',
        );
      case 'claimed':
        break;
    }

    const claimRef = { principalId, key, claimToken: claim.claimToken };
    let completed = false;
    req.idempotency = {
      key,
      async complete(trx, response) {
        if (!(await completeIdempotencyKey(trx, { ...claimRef, response }))) {
          throw new ConflictError(
            'The claim on this Idempotency-Key lapsed and another request took it over; nothing was created. Retry with the same key to get its result.',
          );
        }
        completed = true;
      },
    };

    const response = captureResponse(res);
    const settle = () => {
      // Completed inside a transaction that then failed to commit (e.g. a shared group
      // commit): the 5xx still releases the claim. The release only deletes an in-flight
      // claim, so it cannot touch a record whose completion did commit.
      if (completed && res.statusCode < 500) return;
      void settleAfterResponse(deps.db, req, res, claimRef, response.body()).catch((err: unknown) => {
        // The database being away is what this lease is for; anything else is a fault.
        const level = isDatabaseUnavailable(err) ? 'warn' : 'error';
        req.log[level](
          { err: toError(err) },
          'could not settle the idempotency claim; it lapses with its lease',
        );
      });
    };
    res.once('close', () => {
      // A client that hangs up does not stop the route: its write may still commit. The claim
      // stays in flight (a concurrent retry gets 409) until the route has answered, and its
      // answer is stored even though nobody received it, so the retry replays it.
      if (res.writableFinished || response.produced()) settle();
      else response.onProduced(settle);
    });
    next();
  };
}

/**
 * The path a fingerprint covers: the route's pattern filled with its validated parameters, so
 * spellings Express routes to the same resource (`/V1/Backups`, a trailing slash, an upper-case
 * id) are the same request, not a 422 on the retry. For a request spelled as the api spells its
 * paths this equals the raw path, so records stored before this rule still match.
 */
function fingerprintPath(req: Request): string {
  const pattern = (req.route as { path?: unknown } | undefined)?.path;
  if (typeof pattern !== 'string') return req.originalUrl.split('?', 1)[0] ?? '';
  const params: Record<string, unknown> = { ...req.params, ...(req.valid?.params as object | undefined) };
  return (req.baseUrl + pattern).replace(/:([A-Za-z0-9_]+)/g, (whole, name: string) =>
    params[name] === undefined ? whole : encodeURIComponent(String(params[name])),
  );
}

function replay(res: Response, stored: StoredResponse): void {
  res.setHeader('Idempotent-Replayed', 'true');
  if (stored.location) res.setHeader('Location', stored.location);
  res
    .status(stored.status)
    .type(stored.status >= 400 ? PROBLEM_CONTENT_TYPE : 'application/json')
    .send(JSON.stringify(stored.body));
}

/**
 * Keep what the route sends, so a response it produced without completing the claim can be
 * stored, and tell when the route has produced its response (it may do so after the client
 * went away).
 */
function captureResponse(res: Response): {
  body(): unknown;
  produced(): boolean;
  onProduced(cb: () => void): void;
} {
  let body: unknown;
  let produced = false;
  let waiting: (() => void) | undefined;
  const markProduced = () => {
    if (produced) return;
    produced = true;
    const cb = waiting;
    waiting = undefined;
    cb?.();
  };
  const send = res.send.bind(res);
  res.send = (chunk?: unknown) => {
    if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) {
      try {
        body = JSON.parse(chunk.toString());
      } catch {
        body = undefined;
      }
    } else if (chunk !== undefined) {
      body = chunk;
    }
    try {
      return send(chunk);
    } finally {
      markProduced();
    }
  };
  const end = res.end.bind(res) as (...args: unknown[]) => Response;
  res.end = ((...args: unknown[]) => {
    try {
      return end(...args);
    } finally {
      markProduced();
    }
  }) as typeof res.end;
  return {
    body: () => body,
    produced: () => produced,
    onProduced: (cb) => {
      if (produced) cb();
      else waiting = cb;
    },
  };
}

async function settleAfterResponse(
  db: Kysely<Database>,
  req: Request,
  res: Response,
  claim: { principalId: string; key: string; claimToken: string },
  body: unknown,
): Promise<void> {
  const status = res.statusCode;
  if (status >= 500 || body === undefined) {
    await releaseIdempotencyKey(db, claim);
    req.log.info({ status }, 'idempotency claim released: the request may be retried with the same key');
    return;
  }
  const location = res.getHeader('Location');
  await completeIdempotencyKey(db, {
    ...claim,
    response: { status, body, location: typeof location === 'string' ? location : null },
  });
}
