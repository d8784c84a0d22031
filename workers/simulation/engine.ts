/**
 * Discrete-event simulation of a G/G/c queue: customers arrive (Poisson or evenly
 * spaced), wait in one FIFO line, are served by the first free of c servers, and leave.
 * Optional: a bounded line (arrivals finding it full are dropped) and a fixed patience
 * (a waiting customer leaves unserved once it has waited patience_ms).
 *
 * Determinism: all randomness comes from two xoshiro128** streams (arrivals, services)
 * seeded from the scenario's seed, and every float operation happens in the same order
 * whatever the step sizes, so (scenario, seed) gives a byte-identical result, and so does
 * a run stopped at any checkpoint and resumed.
 *
 * Events and their order at equal times: departure, then abandonment, then arrival (a
 * server freed at time t takes the customer waiting, or the one arriving, at t; a
 * customer whose patience runs out exactly when a server frees is served).
 *
 * Memory is bounded whatever the load: the departures are a binary heap of at most c
 * times; statistics are streaming histograms; the waiting line is either a ring buffer
 * of at most queue_capacity arrival times or, when unlimited, no storage at all: with no
 * drops the line is always the customers [arrived − length, arrived), so the arrival
 * time of its head is replayed by a second copy of the arrival stream (the "trail")
 * taken when the line was last empty. Constant patience keeps abandonments in FIFO
 * order, so the next one is always the head's and is handled exactly as an event.
 */
import type { ResolvedScenario, SimulationResult } from '../../shared/contract/simulation';
import { pushDeparture, replaceEarliest } from './departure-heap';
import { CheckpointMismatchError, sameScenario, type EngineCheckpoint } from './engine-checkpoint';
import { summariseRun } from './engine-result';
import { seedState, Xoshiro128 } from './rng';
import { FixedHistogram, LogLinearHistogram, WAIT_EDGES_MS } from './stats';

export { CheckpointMismatchError, type EngineCheckpoint };

const ARRIVAL_STREAM = 0;
const SERVICE_STREAM = 1;
const TWO_PI = 2 * Math.PI;

const enum ArrivalKind {
  Poisson = 0,
  Constant = 1,
}
const enum ServiceKind {
  Exponential = 0,
  Constant = 1,
  Lognormal = 2,
}

/** What one call to {@link Engine.step} achieved. */
export interface StepResult {
  /** Every customer has left (served, dropped or abandoned). */
  done: boolean;
  /** finished / customers, 0..1. */
  progress: number;
  /** Customers that have left so far. */
  finished: number;
}

export interface Engine {
  readonly scenario: ResolvedScenario;
  /** Events handled so far (arrivals + departures + abandonments). */
  readonly events: number;
  /** Customers that have left so far. */
  readonly finished: number;
  /** Run up to maxEvents events (at least 1 unless done). */
  step(maxEvents: number): StepResult;
  /** The full state, JSON-serialisable; resume it with createEngine(scenario, checkpoint). */
  checkpoint(): EngineCheckpoint;
  /** The result; throws when the run is not done yet. */
  result(): SimulationResult;
}

/**
 * Make an engine for a scenario (seed fixed), fresh or resumed from a checkpoint that an
 * engine for the same scenario produced.
 * @throws CheckpointMismatchError when the checkpoint is for another scenario or malformed.
 */
export function createEngine(scenario: ResolvedScenario, fromCheckpoint?: EngineCheckpoint): Engine {
  const engine = new QueueEngine(scenario);
  if (fromCheckpoint !== undefined) {
    try {
      engine.restore(fromCheckpoint);
    } catch (err) {
      if (err instanceof CheckpointMismatchError) throw err;
      throw new CheckpointMismatchError('cannot resume from checkpoint: it is malformed', { cause: err });
    }
  }
  return engine;
}

class QueueEngine implements Engine {
  readonly scenario: ResolvedScenario;
  // Scenario constants, flattened for the hot loop.
  private readonly servers: number;
  private readonly customers: number;
  private readonly warmup: number;
  private readonly arrivalKind: ArrivalKind;
  private readonly meanGap: number;
  private readonly serviceKind: ServiceKind;
  private readonly serviceMean: number;
  private readonly lnMu: number;
  private readonly lnSigma: number;
  private readonly patience: number;
  private readonly capacity: number;
  private readonly bounded: boolean;

  // Dynamic state (everything here is in the checkpoint).
  events = 0;
  finished = 0;
  private arrived = 0;
  private nextArrival: number;
  private readonly arrivalRng: Xoshiro128;
  private readonly serviceRng: Xoshiro128;
  private hasSpare = false;
  private spare = 0;
  private readonly heap: Float64Array;
  private busy = 0;
  private queueLength = 0;
  private readonly ring: Float64Array;
  private ringHead = 0;
  private unmeasuredInQueue = 0;
  private readonly trailRng: Xoshiro128;
  private trailTime = 0;
  private trailIndex = 0;
  private now = 0;
  private measuring = false;
  private windowStart = 0;
  private lastChange = 0;
  private queueArea = 0;
  private busyArea = 0;
  private windowDepartures = 0;
  private served = 0;
  private dropped = 0;
  private abandoned = 0;
  private measuredDropped = 0;
  private measuredAbandoned = 0;
  private wait = new LogLinearHistogram();
  private sojourn = new LogLinearHistogram();
  private readonly waitBuckets = new FixedHistogram(WAIT_EDGES_MS);

  constructor(scenario: ResolvedScenario) {
    this.scenario = scenario;
    this.servers = scenario.servers;
    this.customers = scenario.customers;
    this.warmup = scenario.warmup_customers ?? 0;
    this.arrivalKind = scenario.arrival.process === 'poisson' ? ArrivalKind.Poisson : ArrivalKind.Constant;
    this.meanGap = 1000 / scenario.arrival.rate_per_s;
    const service = scenario.service;
    this.serviceMean = service.mean_ms;
    this.serviceKind =
      service.distribution === 'exponential'
        ? ServiceKind.Exponential
        : service.distribution === 'constant'
          ? ServiceKind.Constant
          : ServiceKind.Lognormal;
    // Lognormal with mean m and coefficient of variation cv: σ² = ln(1 + cv²), μ = ln m − σ²/2.
    const cv = service.distribution === 'lognormal' ? service.cv : 1;
    const sigma2 = Math.log(1 + cv * cv);
    this.lnSigma = Math.sqrt(sigma2);
    this.lnMu = Math.log(service.mean_ms) - sigma2 / 2;
    this.patience = scenario.patience_ms ?? Infinity;
    this.bounded = scenario.queue_capacity !== undefined;
    this.capacity = scenario.queue_capacity ?? Infinity;
    this.ring = new Float64Array(this.bounded ? this.capacity : 0);
    this.heap = new Float64Array(this.servers);
    this.arrivalRng = new Xoshiro128(seedState(scenario.seed, ARRIVAL_STREAM));
    this.serviceRng = new Xoshiro128(seedState(scenario.seed, SERVICE_STREAM));
    this.trailRng = new Xoshiro128(seedState(scenario.seed, ARRIVAL_STREAM));
    this.nextArrival = this.gap(this.arrivalRng);
  }

  /** Time from one arrival to the next. */
  private gap(rng: Xoshiro128): number {
    return this.arrivalKind === ArrivalKind.Poisson
      ? -Math.log(rng.nextOpen01()) * this.meanGap
      : this.meanGap;
  }

  private serviceTime(): number {
    switch (this.serviceKind) {
      case ServiceKind.Exponential:
        return -Math.log(this.serviceRng.nextOpen01()) * this.serviceMean;
      case ServiceKind.Constant:
        return this.serviceMean;
      default:
        return Math.exp(this.lnMu + this.lnSigma * this.normal());
    }
  }

  /** Standard normal deviate (Box–Muller; the pair's second value is kept for the next call). */
  private normal(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    const r = Math.sqrt(-2 * Math.log(this.serviceRng.nextOpen01()));
    const theta = TWO_PI * this.serviceRng.nextOpen01();
    this.spare = r * Math.sin(theta);
    this.hasSpare = true;
    return r * Math.cos(theta);
  }

  /** Add the time since the last change to the queue-length and busy-server integrals. */
  private advance(t: number): void {
    if (this.measuring) {
      const dt = t - this.lastChange;
      this.queueArea += this.queueLength * dt;
      this.busyArea += this.busy * dt;
      this.lastChange = t;
    }
    this.now = t;
  }

  private heapPop(): void {
    const last = this.heap[--this.busy]!;
    if (this.busy > 0) replaceEarliest(this.heap, this.busy, last);
  }

  /** Arrival time of the customer at the head of the line (line not empty). */
  private headArrival(): number {
    return this.bounded ? this.ring[this.ringHead]! : this.trailTime;
  }

  /** Remove the head of the line; returns whether it was a measured (post-warmup) customer. */
  private dequeue(): boolean {
    this.queueLength--;
    if (this.bounded) {
      this.ringHead = this.ringHead + 1 === this.capacity ? 0 : this.ringHead + 1;
      if (this.unmeasuredInQueue > 0) {
        this.unmeasuredInQueue--;
        return false;
      }
      return true;
    }
    const measured = this.trailIndex >= this.warmup;
    if (this.queueLength > 0) {
      this.trailIndex++;
      this.trailTime += this.gap(this.trailRng);
    }
    return measured;
  }

  private record(wait: number, service: number): void {
    this.wait.record(wait);
    this.sojourn.record(wait + service);
    this.waitBuckets.record(wait);
  }

  step(maxEvents: number): StepResult {
    const customers = this.customers;
    const servers = this.servers;
    const patience = this.patience;
    let budget = maxEvents;
    while (budget > 0 && this.finished < customers) {
      budget--;
      this.events++;
      const tDep = this.busy > 0 ? this.heap[0]! : Infinity;
      const tAbandon = this.queueLength > 0 && patience < Infinity ? this.headArrival() + patience : Infinity;
      const tArr = this.nextArrival;
      if (tDep <= tAbandon && tDep <= tArr) {
        // Departure: the server takes the head of the line, or goes idle.
        this.advance(tDep);
        this.served++;
        this.finished++;
        if (this.measuring) this.windowDepartures++;
        if (this.queueLength > 0) {
          const arrivedAt = this.headArrival();
          const measured = this.dequeue();
          const s = this.serviceTime();
          replaceEarliest(this.heap, this.busy, tDep + s);
          if (measured) this.record(tDep - arrivedAt, s);
        } else {
          this.heapPop();
        }
      } else if (tAbandon <= tArr) {
        this.advance(tAbandon);
        this.abandoned++;
        this.finished++;
        if (this.dequeue()) this.measuredAbandoned++;
      } else {
        const t = tArr;
        const index = this.arrived++;
        if (index === this.warmup) {
          this.measuring = true;
          this.windowStart = t;
          this.lastChange = t;
        }
        this.advance(t);
        const measured = index >= this.warmup;
        if (this.busy < servers) {
          const s = this.serviceTime();
          pushDeparture(this.heap, this.busy++, t + s);
          if (measured) this.record(0, s);
        } else if (this.queueLength < this.capacity) {
          if (this.bounded) {
            let slot = this.ringHead + this.queueLength;
            if (slot >= this.capacity) slot -= this.capacity;
            this.ring[slot] = t;
            if (!measured) this.unmeasuredInQueue++;
          } else if (this.queueLength === 0) {
            // The line was empty: the trail restarts here, from the arrival stream's
            // state right after drawing this customer's arrival time.
            this.trailRng.setState(this.arrivalRng);
            this.trailTime = t;
            this.trailIndex = index;
          }
          this.queueLength++;
        } else {
          this.dropped++;
          this.finished++;
          if (measured) this.measuredDropped++;
        }
        this.nextArrival = this.arrived < customers ? t + this.gap(this.arrivalRng) : Infinity;
      }
    }
    return { done: this.finished >= customers, progress: this.finished / customers, finished: this.finished };
  }

  checkpoint(): EngineCheckpoint {
    let timesBase64: string | null = null;
    if (this.bounded) {
      const times = new Float64Array(this.queueLength);
      for (let k = 0; k < this.queueLength; k++) times[k] = this.ring[(this.ringHead + k) % this.capacity]!;
      timesBase64 = Buffer.from(times.buffer, times.byteOffset, times.byteLength).toString('base64');
    }
    return {
      version: 1,
      scenario: structuredClone(this.scenario),
      events: this.events,
      arrived: this.arrived,
      finished: this.finished,
      next_arrival: Number.isFinite(this.nextArrival) ? this.nextArrival : null,
      arrival_rng: this.arrivalRng.state(),
      service_rng: this.serviceRng.state(),
      normal_spare: this.hasSpare ? this.spare : null,
      departures: Array.from(this.heap.subarray(0, this.busy)),
      queue: {
        length: this.queueLength,
        trail:
          !this.bounded && this.queueLength > 0
            ? { rng: this.trailRng.state(), time: this.trailTime, index: this.trailIndex }
            : null,
        times_base64: timesBase64,
        unmeasured: this.unmeasuredInQueue,
      },
      now: this.now,
      measuring: this.measuring,
      window_start: this.windowStart,
      last_change: this.lastChange,
      queue_area: this.queueArea,
      busy_area: this.busyArea,
      window_departures: this.windowDepartures,
      served: this.served,
      dropped: this.dropped,
      abandoned: this.abandoned,
      measured_dropped: this.measuredDropped,
      measured_abandoned: this.measuredAbandoned,
      wait: this.wait.state(),
      sojourn: this.sojourn.state(),
      wait_buckets: this.waitBuckets.state(),
    };
  }

  /** Load a checkpoint into this fresh engine. */
  restore(cp: EngineCheckpoint): void {
    const fail = (why: string): never => {
      throw new CheckpointMismatchError(`cannot resume from checkpoint: ${why}`);
    };
    if (cp === null || typeof cp !== 'object' || cp.version !== 1) fail('unknown checkpoint version');
    if (!sameScenario(cp.scenario, this.scenario)) fail('it belongs to another scenario');
    if (cp.departures.length > this.servers) fail('more departures than servers');
    const q = cp.queue;
    if (!Number.isInteger(q.length) || q.length < 0 || q.length > this.capacity) fail('bad queue length');
    this.events = cp.events;
    this.arrived = cp.arrived;
    this.finished = cp.finished;
    this.nextArrival = cp.next_arrival ?? Infinity;
    this.arrivalRng.setState(new Xoshiro128(cp.arrival_rng));
    this.serviceRng.setState(new Xoshiro128(cp.service_rng));
    this.hasSpare = cp.normal_spare !== null;
    this.spare = cp.normal_spare ?? 0;
    this.heap.set(cp.departures);
    this.busy = cp.departures.length;
    this.queueLength = q.length;
    if (this.bounded) {
      const bytes = Buffer.from(q.times_base64 ?? '', 'base64');
      if (bytes.byteLength !== q.length * 8) fail('queue times do not match its length');
      const times = new Float64Array(
        bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
      );
      this.ring.set(times);
      this.ringHead = 0;
      this.unmeasuredInQueue = q.unmeasured;
    } else if (q.length > 0) {
      if (q.trail === null) fail('queue without its trail');
      this.trailRng.setState(new Xoshiro128(q.trail!.rng));
      this.trailTime = q.trail!.time;
      this.trailIndex = q.trail!.index;
    }
    this.now = cp.now;
    this.measuring = cp.measuring;
    this.windowStart = cp.window_start;
    this.lastChange = cp.last_change;
    this.queueArea = cp.queue_area;
    this.busyArea = cp.busy_area;
    this.windowDepartures = cp.window_departures;
    this.served = cp.served;
    this.dropped = cp.dropped;
    this.abandoned = cp.abandoned;
    this.measuredDropped = cp.measured_dropped;
    this.measuredAbandoned = cp.measured_abandoned;
    this.wait = LogLinearHistogram.fromState(cp.wait);
    this.sojourn = LogLinearHistogram.fromState(cp.sojourn);
    this.waitBuckets.load(cp.wait_buckets);
  }

  result(): SimulationResult {
    if (this.finished < this.customers) {
      throw new Error(`simulation not finished: ${this.finished} of ${this.customers} customers`);
    }
    return summariseRun(this.scenario, {
      now: this.now,
      windowStart: this.windowStart,
      queueArea: this.queueArea,
      busyArea: this.busyArea,
      windowDepartures: this.windowDepartures,
      served: this.served,
      dropped: this.dropped,
      abandoned: this.abandoned,
      measuredDropped: this.measuredDropped,
      measuredAbandoned: this.measuredAbandoned,
      wait: this.wait,
      sojourn: this.sojourn,
      waitBuckets: this.waitBuckets,
    });
  }
}
