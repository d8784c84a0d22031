import { describe, expect, it } from 'vitest';
import type { ProviderState } from '../../shared/db/schema';
import { nextProviderState, type ProbeCounters } from '../../shared/probe-state';

const T = { downAfter: 3, recoverAfter: 2 };
const at = (state: ProviderState, consecutiveFailures = 0, consecutiveSuccesses = 0): ProbeCounters => ({
  state,
  consecutiveFailures,
  consecutiveSuccesses,
});

describe('provider state machine (DOWN_AFTER 3, RECOVER_AFTER 2)', () => {
  it.each([
    // [name, from, ok, to state, failures, successes, transition?]
    ['unknown → healthy on the first success', at('unknown'), true, 'healthy', 0, 1, true],
    ['unknown → degraded on the first failure', at('unknown'), false, 'degraded', 1, 0, true],
    ['healthy stays healthy on a success', at('healthy', 0, 5), true, 'healthy', 0, 6, false],
    ['healthy → degraded on a failure', at('healthy', 0, 5), false, 'degraded', 1, 0, true],
    ['degraded stays degraded on a second failure', at('degraded', 1), false, 'degraded', 2, 0, false],
    ['degraded → down on the third consecutive failure', at('degraded', 2), false, 'down', 3, 0, true],
    ['down stays down on more failures', at('down', 3), false, 'down', 4, 0, false],
    ['degraded stays degraded on one success', at('degraded', 2), true, 'degraded', 0, 1, false],
    [
      'degraded → healthy on the second consecutive success',
      at('degraded', 0, 1),
      true,
      'healthy',
      0,
      2,
      true,
    ],
    ['down stays down on one success', at('down', 5), true, 'down', 0, 1, false],
    ['down → healthy on the second consecutive success', at('down', 0, 1), true, 'healthy', 0, 2, true],
    ['a failure between successes restarts the recovery count', at('down', 0, 1), false, 'down', 1, 0, false],
    [
      'a success between failures restarts the failure count',
      at('degraded', 2),
      true,
      'degraded',
      0,
      1,
      false,
    ],
  ] as const)('%s', (_name, from, ok, state, failures, successes, transition) => {
    const next = nextProviderState(from, ok, T);
    expect(next).toEqual({
      state,
      consecutiveFailures: failures,
      consecutiveSuccesses: successes,
      transition: transition ? { from: from.state, to: state } : null,
    });
  });

  it('a sequence of outcomes walks unknown → degraded → down → healthy → degraded with one transition each', () => {
    let s: ProbeCounters = at('unknown');
    const transitions: string[] = [];
    for (const ok of [false, false, false, false, true, true, true, false]) {
      const n = nextProviderState(s, ok, T);
      if (n.transition) transitions.push(`${n.transition.from}→${n.transition.to}`);
      s = n;
    }
    expect(transitions).toEqual(['unknown→degraded', 'degraded→down', 'down→healthy', 'healthy→degraded']);
  });

  it.each([
    [
      'DOWN_AFTER 1 takes healthy straight to down',
      at('healthy'),
      false,
      { downAfter: 1, recoverAfter: 2 },
      'down',
    ],
    [
      'DOWN_AFTER 1 takes unknown straight to down',
      at('unknown'),
      false,
      { downAfter: 1, recoverAfter: 2 },
      'down',
    ],
    [
      'RECOVER_AFTER 1 brings down back on one success',
      at('down', 4),
      true,
      { downAfter: 3, recoverAfter: 1 },
      'healthy',
    ],
    [
      'DOWN_AFTER 5 keeps the third failure degraded',
      at('degraded', 2),
      false,
      { downAfter: 5, recoverAfter: 2 },
      'degraded',
    ],
  ] as const)('%s', (_name, from, ok, thresholds, state) => {
    expect(nextProviderState(from, ok, thresholds).state).toBe(state);
  });
});
