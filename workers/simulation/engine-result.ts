import type { ResolvedScenario, SimulationResult } from '../../shared/contract/simulation';
import { erlangC, erlangCMeanWait } from './erlang-c';
import { WAIT_EDGES_MS, type FixedHistogram, type LogLinearHistogram } from './stats';

/** What a finished run counted, as the engine holds it. */
export interface RunTallies {
  /** Time of the last event. */
  now: number;
  /** Start of the measured window (the first post-warmup arrival). */
  windowStart: number;
  /** Integrals over the measured window of the line's length and of the busy servers. */
  queueArea: number;
  busyArea: number;
  windowDepartures: number;
  served: number;
  dropped: number;
  abandoned: number;
  measuredDropped: number;
  measuredAbandoned: number;
  /** Waits and sojourns of the measured customers that were served. */
  wait: LogLinearHistogram;
  sojourn: LogLinearHistogram;
  waitBuckets: FixedHistogram;
}

/**
 * The result of a finished run: time averages over the measured window, and the Erlang C
 * prediction next to the simulated figures when the model is M/M/c with an unlimited line,
 * no patience and a load below capacity (where the formula holds).
 */
export function summariseRun(sc: ResolvedScenario, t: RunTallies): SimulationResult {
  const windowMs = t.now - t.windowStart;
  const perMs = (x: number) => (windowMs > 0 ? x / windowMs : 0);
  const measuredCustomers = sc.customers - (sc.warmup_customers ?? 0);
  const measuredServed = t.wait.count;
  const wait = t.wait.summary();
  const waited = measuredServed - t.wait.zeros;
  const probabilityOfWait = measuredServed > 0 ? waited / measuredServed : 0;
  let erlang: SimulationResult['erlang_c'] = null;
  const offered = (sc.arrival.rate_per_s * sc.service.mean_ms) / 1000;
  if (
    sc.arrival.process === 'poisson' &&
    sc.service.distribution === 'exponential' &&
    sc.queue_capacity === undefined &&
    sc.patience_ms === undefined &&
    offered < sc.servers
  ) {
    erlang = {
      probability_of_wait: erlangC(sc.servers, offered),
      mean_wait_ms: erlangCMeanWait(sc.servers, offered, sc.service.mean_ms),
      simulated_probability_of_wait: probabilityOfWait,
      simulated_mean_wait_ms: wait.mean,
    };
  }
  return {
    customers: sc.customers,
    served: t.served,
    dropped: t.dropped,
    abandoned: t.abandoned,
    measured: {
      customers: measuredCustomers,
      served: measuredServed,
      dropped: t.measuredDropped,
      abandoned: t.measuredAbandoned,
    },
    window_ms: windowMs,
    end_ms: t.now,
    utilization: perMs(t.busyArea) / sc.servers,
    throughput_per_s: perMs(t.windowDepartures) * 1000,
    mean_queue_length: perMs(t.queueArea),
    mean_in_system: perMs(t.queueArea + t.busyArea),
    probability_of_wait: probabilityOfWait,
    probability_of_drop: t.measuredDropped / measuredCustomers,
    probability_of_abandon: t.measuredAbandoned / measuredCustomers,
    wait_ms: wait,
    sojourn_ms: t.sojourn.summary(),
    wait_histogram: { edges_ms: [...WAIT_EDGES_MS], counts: t.waitBuckets.state() },
    erlang_c: erlang,
  };
}
