import type { ProviderState } from './db/schema';

/**
 * The provider health state machine (issue 5), pure: the current state and counters plus
 * one probe outcome in, the next state and counters out.
 *
 * - A success resets the failure count; a failure resets the success count.
 * - unknown → healthy on its first success; unknown or healthy → degraded on a failure.
 * - Any state → down once `downAfter` consecutive failures are reached (with `downAfter`
 *   1, the first failure is already down).
 * - degraded or down → healthy once `recoverAfter` consecutive successes are reached;
 *   before that the provider keeps its state (a single good answer proves little).
 */

export interface ProbeCounters {
  state: ProviderState;
  consecutiveFailures: number;
  consecutiveSuccesses: number;
}

export interface StateThresholds {
  /** DOWN_AFTER: consecutive failures that mean down. */
  downAfter: number;
  /** RECOVER_AFTER: consecutive successes that bring degraded or down back to healthy. */
  recoverAfter: number;
}

export interface StateStep extends ProbeCounters {
  /** Set when the state changed: the caller stores it and logs it once. */
  transition: { from: ProviderState; to: ProviderState } | null;
}

export function nextProviderState(current: ProbeCounters, ok: boolean, t: StateThresholds): StateStep {
  const consecutiveFailures = ok ? 0 : current.consecutiveFailures + 1;
  const consecutiveSuccesses = ok ? current.consecutiveSuccesses + 1 : 0;
  let state: ProviderState = current.state;
  if (ok) {
    if (current.state === 'unknown') state = 'healthy';
    else if (current.state !== 'healthy' && consecutiveSuccesses >= t.recoverAfter) state = 'healthy';
  } else if (consecutiveFailures >= t.downAfter) {
    state = 'down';
  } else if (current.state === 'unknown' || current.state === 'healthy') {
    state = 'degraded';
  }
  return {
    state,
    consecutiveFailures,
    consecutiveSuccesses,
    transition: state === current.state ? null : { from: current.state, to: state },
  };
}
