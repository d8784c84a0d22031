import { createHash } from 'node:crypto';

/**
 * Pure parts of the Idempotency-Key contract (DESIGN.md §4.1): parsing the header,
 * canonical JSON, and the request fingerprint.
 */

export const IDEMPOTENCY_KEY_MAX = 255;

export type ParsedIdempotencyKey =
  | { ok: true; key: string }
  | { ok: false; reason: 'missing' }
  | { ok: false; reason: 'invalid'; detail: string };

/**
 * Parse the header. `undefined` means the header is absent; anything else — including an
 * empty value, which Node gives for a whitespace-only header — is present and must be valid.
 * Pass every value the request carried (`req.headersDistinct`): Node joins repeated headers
 * with ", ", which would turn two headers into one different key. Accepts a bare token or an
 * RFC 8941 sf-string (`"abc"`, with `\"` and `\\` escapes), and after unquoting requires
 * 1–255 visible ASCII characters.
 */
export function parseIdempotencyKey(header: string | string[] | undefined): ParsedIdempotencyKey {
  if (header === undefined) return { ok: false, reason: 'missing' };
  if (Array.isArray(header)) {
    if (header.length !== 1) {
      return {
        ok: false,
        reason: 'invalid',
        detail: `send exactly one Idempotency-Key header (this request has ${header.length})`,
      };
    }
    header = header[0]!;
  }
  let value = header.trim();
  if (value.startsWith('"')) {
    const inner = unquoteSfString(value);
    if (inner === undefined) {
      return {
        ok: false,
        reason: 'invalid',
        detail:
          'the quoted Idempotency-Key is not a valid RFC 8941 string: it must end with its closing quote, and inside it only \\" and \\\\ are escapes',
      };
    }
    value = inner;
  }
  if (value.length === 0) {
    return {
      ok: false,
      reason: 'invalid',
      detail: 'Idempotency-Key is empty; send 1-255 visible ASCII characters, e.g. a UUID',
    };
  }
  if (value.length > IDEMPOTENCY_KEY_MAX) {
    return {
      ok: false,
      reason: 'invalid',
      detail: `Idempotency-Key is ${value.length} characters; at most ${IDEMPOTENCY_KEY_MAX} are allowed`,
    };
  }
  if (!/^[\x21-\x7e]+$/.test(value)) {
    return {
      ok: false,
      reason: 'invalid',
      detail: 'Idempotency-Key may only contain visible ASCII characters (0x21-0x7E), no spaces',
    };
  }
  return { ok: true, key: value };
}

/**
 * The value of an RFC 8941 sf-string (`"` chars `"`, where `\` escapes only `"` and `\`),
 * or undefined when `text` is not exactly one such string.
 */
function unquoteSfString(text: string): string | undefined {
  let out = '';
  for (let i = 1; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\') {
      const next = text[++i];
      if (next !== '"' && next !== '\\') return undefined;
      out += next;
    } else if (c === '"') {
      return i === text.length - 1 ? out : undefined;
    } else {
      out += c;
    }
  }
  return undefined; // no closing quote
}

/** JSON with object keys sorted at every depth, so equal bodies fingerprint equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value)) ?? 'null';
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  // By prototype, not `.constructor`: a body may have its own "constructor" key.
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    // fromEntries defines own properties, so a "__proto__" key is kept, not used as a setter.
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** SHA-256 of method, concrete path (no query) and canonical JSON body. */
export function requestFingerprint(method: string, path: string, body: unknown): string {
  return createHash('sha256')
    .update(method.toUpperCase())
    .update('\n')
    .update(path)
    .update('\n')
    .update(body === undefined ? '' : canonicalJson(body))
    .digest('hex');
}
