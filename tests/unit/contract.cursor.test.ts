import { describe, expect, it } from 'vitest';
import { decodeCursor, encodeCursor } from '../../shared/contract/common';

const raw = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

describe('list cursors', () => {
  it('round-trip their position and the list that issued them', () => {
    const c = encodeCursor(
      { createdAt: 1_780_000_000_000, id: 'sim-42' },
      'GET /v1/simulations?status=queued',
    );
    expect(decodeCursor(c)).toEqual({
      after: { createdAt: 1_780_000_000_000, id: 'sim-42' },
      list: 'GET /v1/simulations?status=queued',
    });
  });

  it('a two-field cursor from before lists were named decodes with no list', () => {
    expect(decodeCursor(raw([5, 'abc']))).toEqual({ after: { createdAt: 5, id: 'abc' }, list: undefined });
  });

  it.each([
    ['a list name with a control character', [5, 'abc', 'GET /v1/backups\n']],
    ['a list name that is not a GET path', [5, 'abc', 'DROP TABLE backups']],
    ['an over-long list name', [5, 'abc', `GET /${'a'.repeat(101)}`]],
    ['a list that is not a string', [5, 'abc', 7]],
    ['four fields', [5, 'abc', 'GET /v1/backups', 'x']],
    ['an id a list never holds', [5, 'a\u0000b', 'GET /v1/backups']],
    ['a timestamp that is not a safe integer', [1.5, 'abc', 'GET /v1/backups']],
  ])('%s is not a cursor this api issued', (_what, value) => {
    expect(decodeCursor(raw(value))).toBeUndefined();
  });

  it('text that is not base64url JSON is not a cursor', () => {
    expect(decodeCursor('garbage')).toBeUndefined();
  });
});
