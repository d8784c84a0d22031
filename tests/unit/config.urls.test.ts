import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config';
import { ConfigError } from '../../shared/errors';
import { redactUrl } from '../../shared/logger';

describe('redactUrl', () => {
  it.each([
    ['postgres://app:hunter2@db:5432/x', 'postgres://app:***@db:5432/x'],
    ['postgres://app@db/x?schema=s&password=hunter2', 'postgres://app@db/x?schema=s&password=***'],
    ['postgres://db/x?sslkey=%2Fk.pem&sslpassword=hunter2', 'postgres://db/x?sslkey=***&sslpassword=***'],
    ['rediss://:hunter2@cache:6380/0', 'rediss://:***@cache:6380/0'],
    ['redis://cache:6379', 'redis://cache:6379'],
  ])('%s is shown as %s', (url, shown) => {
    expect(redactUrl(url)).toBe(shown);
  });

  it('a URL that does not parse is not shown at all, only its scheme', () => {
    // An unencoded '#' or '/' in a password makes the WHATWG parser refuse the URL.
    for (const url of [
      'postgres://app:hun#ter2@db/x',
      'postgres://app:hun/ter2@db/x',
      'redis://:hun#ter2@h',
    ]) {
      const shown = redactUrl(url);
      expect(shown).not.toContain('hun');
      expect(shown).toMatch(/^(postgres|redis):\(unparseable URL, not shown\)$/);
    }
  });
});

describe('configuration with an unparseable URL', () => {
  it.each([
    ['DATABASE_URL', 'postgres://app:Sup3r#Secret@127.0.0.1:5432/test'],
    ['REDIS_URL', 'redis://:Sup3r#Secret@127.0.0.1:6379'],
  ])('%s is refused at start with advice, never echoing the value', (name, value) => {
    let err: unknown;
    try {
      loadConfig({ [name]: value });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const text = (err as Error).message;
    expect(text).toContain(`${name}=(value hidden)`);
    expect(text).toContain('percent-encode');
    expect(text).not.toContain('Secret');
  });
});

describe('configuration of a Postgres URL', () => {
  it.each([
    ['postgres://db/x?schema=walk-review', 'schema= must be 1-63 letters'],
    ['postgres://db/x?schema=1abc', 'schema= must be 1-63 letters'],
    ['postgres://db/x?relaxed_commits=maybe', 'relaxed_commits= must be on or off'],
    [
      'postgres://db/x?search_path=ux',
      'parameter search_path= is not read; name the schema with ?schema=<name>',
    ],
    ['postgres://db/x?currentSchema=ux', 'parameter currentSchema= is not read'],
    ['postgres://db/x?Schema=ux', 'parameter Schema= is not read'],
  ])('%s is refused at start (exit 78), not at the first connection', (url, says) => {
    expect(() => loadConfig({ DATABASE_URL: url })).toThrow(says);
  });

  it('a valid schema and relaxed_commits are accepted', () => {
    const url = 'postgres://db/x?schema=ty_app&relaxed_commits=off';
    expect(loadConfig({ DATABASE_URL: url }).DATABASE_URL).toBe(url);
  });
});
