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
 * Parse the header value. `undefined` means the header is absent; anything else —
 * including an empty value, which Node gives for a whitespace-only header — is present
 * and must be valid. Accepts a bare token or an RFC 8941 sf-string (`"abc"`, with
 * `\"` and `\\` escapes), and after unquoting requires 1–255 visible ASCII characters.
 */
export function parseIdempotencyKey(header: string | string[] | undefined): ParsedIdempotencyKey {
  if (header === undefined) return { ok: false, reason: 'missing' };
  if (Array.isArray(header)) {
    return { ok: false, reason: 'invalid', detail: 'send exactly one Idempotency-Key header' };
  }
  let value = header.trim();
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    const inner = value.slice(1, -1);
    // sf-string: only \" and \\ are escapes; a lone backslash or bare quote is malformed.
    if (/\\[^"\\]|\\$/.test(inner) || /(^|[^\\])"/.test(inner.replace(/\\\\/g, ''))) {
      return {
        ok: false,
        reason: 'invalid',
        detail: 'the quoted Idempotency-Key is not a valid RFC 8941 string',
      };
    }
    value = inner.replace(/\\(["\\])/g, '$1');
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

/** JSON with object keys sorted at every depth, so equal bodies fingerprint equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value)) ?? 'null';
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object' && (value as object).constructor === Object) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value as object).sort())
      out[k] = sortKeys((value as Record<string, unknown>)[k]);
    return out;
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
