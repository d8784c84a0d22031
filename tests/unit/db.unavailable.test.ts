import { describe, expect, it } from 'vitest';
import { isDatabaseUnavailable, safeErrorReason } from '../../shared/db/unavailable';

/** Which database errors the api answers with 503 + Retry-After instead of 500. */
describe('isDatabaseUnavailable', () => {
  const pgError = (code: string, severity: string, message = 'x') =>
    Object.assign(new Error(message), { code, severity });
  const sysError = (code: string) => Object.assign(new Error(`connect ${code} 10.0.0.5:5432`), { code });

  it.each([
    [
      'a server restart (57P01, FATAL)',
      pgError('57P01', 'FATAL', 'terminating connection due to administrator command'),
    ],
    ['a server starting up (57P03)', pgError('57P03', 'FATAL', 'the database system is starting up')],
    [
      'connections refused to the database (FATAL 55000)',
      pgError('55000', 'FATAL', 'database "d" is not currently accepting connections'),
    ],
    ['too many connections (53300)', pgError('53300', 'FATAL')],
    ['a connection exception (08006)', pgError('08006', 'ERROR')],
    ['disk full (53100)', pgError('53100', 'ERROR')],
    ['a refused TCP connection', sysError('ECONNREFUSED')],
    ['a reset TCP connection', sysError('ECONNRESET')],
    ['a connection pg saw end', new Error('Connection terminated unexpectedly')],
    ['no pooled connection in time', new Error('timeout exceeded when trying to connect')],
    ['a rollback on a client ended by a FATAL error', new Error('Client was closed and is not queryable')],
    [
      'SQLite busy past busy_timeout',
      Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' }),
    ],
    ['the same, wrapped as a cause', new Error('insert failed', { cause: sysError('ECONNREFUSED') })],
  ])('%s: unavailable', (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(true);
  });

  it.each([
    ['a unique violation (23505)', pgError('23505', 'ERROR')],
    ['a syntax error (42601)', pgError('42601', 'ERROR')],
    [
      'a SQLite constraint',
      Object.assign(new Error('UNIQUE constraint failed'), { code: 'SQLITE_CONSTRAINT_UNIQUE' }),
    ],
    ['a plain bug', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['not an error at all', 'boom'],
    ['null', null],
  ])('%s: not unavailable (a 500)', (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(false);
  });

  it('a reason shows a code, never the server message that names database, user or host', () => {
    expect(
      safeErrorReason(
        pgError('55000', 'FATAL', 'database "secretdb" is not currently accepting connections'),
      ),
    ).toBe('55000');
    expect(safeErrorReason(sysError('ECONNREFUSED'))).toBe('ECONNREFUSED');
    expect(safeErrorReason(new Error('Connection terminated unexpectedly'))).toBe('connection lost');
    expect(safeErrorReason(new Error('password authentication failed for user "alice"'))).toBe('see the log');
    expect(safeErrorReason(Object.assign(new Error('x'), { code: 'has spaces "and quotes"' }))).toBe(
      'see the log',
    );
  });
});
