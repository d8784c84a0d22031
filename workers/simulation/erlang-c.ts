/**
 * Closed-form figures for the M/M/c queue (Poisson arrivals, exponential service, c
 * servers, unlimited waiting room, no abandonment), used to check the simulation and
 * shown beside its result. `a` is the offered load in Erlangs: arrival rate × mean
 * service time. Computed with the numerically stable Erlang B recursion, so c up to
 * thousands is fine.
 */

/** Erlang B: the probability that an arrival finds all c servers busy in a loss system (no queue). */
export function erlangB(c: number, a: number): number {
  if (!Number.isInteger(c) || c < 1) throw new RangeError('c must be a positive integer');
  if (!(a > 0) || !Number.isFinite(a)) throw new RangeError('a must be a positive finite number');
  let b = 1;
  for (let k = 1; k <= c; k++) b = (a * b) / (k + a * b);
  return b;
}

/**
 * Erlang C: the probability that an arrival has to wait. Defined for a < c (a stable
 * queue); throws RangeError otherwise.
 */
export function erlangC(c: number, a: number): number {
  if (!(a < c)) throw new RangeError('Erlang C needs a < c (utilisation below 1)');
  const b = erlangB(c, a);
  return (c * b) / (c - a * (1 - b));
}

/** Mean wait in queue (same unit as meanServiceTime) over all arrivals: C(c, a) × s / (c − a). */
export function erlangCMeanWait(c: number, a: number, meanServiceTime: number): number {
  return (erlangC(c, a) * meanServiceTime) / (c - a);
}
