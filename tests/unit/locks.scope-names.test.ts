import { describe, expect, it } from 'vitest';
import { assertLockScope, retryDelayMs } from '../../shared/locks';

describe('lock scope names', () => {
  it.each(['backups', 'pruning', 'probes', 'outbox-relay', 'simulation:run_1.A-b', 'x'.repeat(200)])(
    'accepts %s',
    (scope) => {
      expect(() => assertLockScope(scope)).not.toThrow();
    },
  );

  it.each(['', ' ', 'has space', 'a/b', 'a*', 'ünïcode', 'x'.repeat(201), 'line\nbreak'])(
    'refuses %j with an error naming the allowed characters',
    (scope) => {
      expect(() => assertLockScope(scope)).toThrow(
        /invalid lock scope .*1-200 characters of A-Z a-z 0-9 : \. _ -/,
      );
    },
  );
});

describe('retry pause on a busy scope', () => {
  it('is jittered between half and one and a half times the base delay', () => {
    expect(retryDelayMs(10_000, () => 0)).toBe(50);
    expect(retryDelayMs(10_000, () => 0.5)).toBe(100);
    expect(retryDelayMs(10_000, () => 0.999)).toBe(150);
  });

  it('never runs past the deadline', () => {
    expect(retryDelayMs(20, () => 0.999)).toBe(20);
    expect(retryDelayMs(0, () => 0.5)).toBe(0);
    expect(retryDelayMs(-5, () => 0.5)).toBe(0);
  });
});
