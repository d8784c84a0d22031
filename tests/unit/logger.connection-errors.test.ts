import { afterEach, describe, expect, it, vi } from 'vitest';
import { connectionErrorLogger, createLogger } from '../../shared/logger';

describe('connectionErrorLogger', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('logs the first error and each new message, the same one at most once a minute with a count', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    const onError = connectionErrorLogger(logger, 'redis connection error', { queue: 'backups' });
    const refused = new Error('connect ECONNREFUSED 127.0.0.1:6379');

    for (let i = 0; i <= 30; i++) {
      onError(refused); // a reconnect every 2 s for a minute
      vi.advanceTimersByTime(2_000);
    }
    onError(new Error('getaddrinfo ENOTFOUND redis')); // a new message: at once
    onError(new Error('getaddrinfo ENOTFOUND redis'));
    vi.advanceTimersByTime(60_000);
    onError(new Error('getaddrinfo ENOTFOUND redis'));

    expect(lines.map((l) => [l.msg, (l.err as { message: string }).message, l.suppressed, l.queue])).toEqual([
      ['redis connection error', 'connect ECONNREFUSED 127.0.0.1:6379', undefined, 'backups'],
      ['redis connection error', 'connect ECONNREFUSED 127.0.0.1:6379', 29, 'backups'],
      ['redis connection error', 'getaddrinfo ENOTFOUND redis', undefined, 'backups'],
      ['redis connection error', 'getaddrinfo ENOTFOUND redis', 1, 'backups'],
    ]);
    expect(lines.every((l) => l.level === 40)).toBe(true);
  });

  it('an error with no message of its own (several addresses refused) is logged with its parts', () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    const onError = connectionErrorLogger(logger, 'redis connection error');
    onError(
      new AggregateError([
        new Error('connect ECONNREFUSED ::1:6379'),
        new Error('connect ECONNREFUSED 127.0.0.1:6379'),
      ]),
    );
    onError(Object.assign(new Error(''), { code: 'ECONNRESET' }));
    expect(lines.map((l) => (l.err as { message: string }).message)).toEqual([
      'connect ECONNREFUSED ::1:6379; connect ECONNREFUSED 127.0.0.1:6379',
      'ECONNRESET',
    ]);
  });
});
