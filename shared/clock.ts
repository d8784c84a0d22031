/** Time, injected so that TTLs, leases and windows can be tested without sleeping. */
export interface Clock {
  /** Wall-clock time; used for stored timestamps and TTLs. */
  now(): Date;
  /** Monotonic milliseconds; used for measuring durations and timeouts. */
  monotonic(): number;
}

export const systemClock: Clock = Object.freeze({
  now: () => new Date(),
  monotonic: () => performance.now(),
});

/** A clock that only moves when told to. For tests. */
export class ManualClock implements Clock {
  private wall: number;
  private mono = 0;
  constructor(start: Date | string = '2026-01-01T00:00:00.000Z') {
    this.wall = new Date(start).getTime();
  }
  now(): Date {
    return new Date(this.wall);
  }
  monotonic(): number {
    return this.mono;
  }
  advance(ms: number): void {
    this.wall += ms;
    this.mono += ms;
  }
}
