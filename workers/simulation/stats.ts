/**
 * Streaming statistics in bounded memory for up to 50 M samples: exact count, sum, max
 * and zero count, plus a log-linear (HDR-style) histogram for percentiles.
 *
 * Log-linear buckets: each power of two from 2^-30 ms (about 1 ps) to 2^60 ms is split
 * into 256 equal sub-buckets, read straight from the bits of the IEEE 754 double (11
 * exponent bits + the top 8 mantissa bits). A percentile reports its bucket's midpoint,
 * clamped to the exact [min, max], so its relative error is at most 1/512 (0.2 %).
 * Exact zeros (clients served at once) have their own count. Positive values below
 * 2^-30 ms fall into the first bucket (absolute error below 1 ps); values from 2^60 ms
 * up into the last, reported as the exact max. The top quantile (rank = count) is the
 * exact max.
 */

const SUB_BITS = 8;
const MIN_EXP = -30;
const MAX_EXP = 60;
const BUCKETS = (MAX_EXP - MIN_EXP) << SUB_BITS;
/** (biased exponent of 2^MIN_EXP) << SUB_BITS: subtracted from the top 19 bits of a double. */
const INDEX_BASE = (1023 + MIN_EXP) << SUB_BITS;

// The engine only runs on little-endian hosts (every platform Node ships for); the word
// holding sign, exponent and top mantissa bits is then u32[1].
const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
f64[0] = 1;
if (u32[1] !== 0x3ff00000) throw new Error('the simulation statistics need a little-endian host');

/** Percentiles every summary reports. */
export const PERCENTILES = [0.5, 0.9, 0.95, 0.99] as const;

export interface Summary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

/** Serialisable state of a {@link LogLinearHistogram}; buckets are sparse [index, count] pairs. */
export interface HistogramState {
  count: number;
  zeros: number;
  sum: number;
  min: number;
  max: number;
  buckets: number[];
}

export class LogLinearHistogram {
  count = 0;
  zeros = 0;
  sum = 0;
  min = Infinity;
  max = 0;
  private readonly counts = new Float64Array(BUCKETS);

  /** Record one non-negative finite value. */
  record(v: number): void {
    this.count++;
    this.sum += v;
    if (v > this.max) this.max = v;
    if (v < this.min) this.min = v;
    if (v === 0) {
      this.zeros++;
      return;
    }
    f64[0] = v;
    let i = (u32[1]! >>> (20 - SUB_BITS)) - INDEX_BASE;
    if (i < 0) i = 0;
    else if (i >= BUCKETS) i = BUCKETS - 1;
    this.counts[i]!++;
  }

  /** The value at quantile q in (0, 1]: the smallest bucket holding rank ceil(q * count). */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    if (rank <= this.zeros) return 0;
    if (rank === this.count) return this.max;
    let seen = this.zeros;
    // The last bucket also holds everything beyond 2^60 ms: only max is known there.
    for (let i = 0; i < BUCKETS - 1; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, bucketMidpoint(i)));
    }
    return this.max;
  }

  summary(): Summary {
    const n = this.count;
    return {
      count: n,
      mean: n === 0 ? 0 : this.sum / n,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p95: this.quantile(0.95),
      p99: this.quantile(0.99),
      max: this.max,
    };
  }

  state(): HistogramState {
    const buckets: number[] = [];
    for (let i = 0; i < BUCKETS; i++) {
      const c = this.counts[i]!;
      if (c !== 0) buckets.push(i, c);
    }
    return {
      count: this.count,
      zeros: this.zeros,
      sum: this.sum,
      min: this.count === 0 ? 0 : this.min,
      max: this.max,
      buckets,
    };
  }

  static fromState(s: HistogramState): LogLinearHistogram {
    const h = new LogLinearHistogram();
    h.count = s.count;
    h.zeros = s.zeros;
    h.sum = s.sum;
    h.min = s.count === 0 ? Infinity : s.min;
    h.max = s.max;
    for (let k = 0; k + 1 < s.buckets.length; k += 2) {
      const i = s.buckets[k]!;
      if (!Number.isInteger(i) || i < 0 || i >= BUCKETS) throw new RangeError(`bad histogram bucket ${i}`);
      h.counts[i] = s.buckets[k + 1]!;
    }
    return h;
  }
}

/** The arithmetic midpoint of bucket i, built from its bits (the half-step mantissa bit set). */
function bucketMidpoint(i: number): number {
  u32[0] = 0;
  u32[1] = (((i + INDEX_BASE) << (20 - SUB_BITS)) | (1 << (19 - SUB_BITS))) >>> 0;
  return f64[0]!;
}

/**
 * Upper edges (ms) of the wait histogram in the result: a 1-2-5 series from 0.01 ms to
 * 1e8 ms. Bucket 0 counts waits of exactly 0; bucket i (1 ≤ i ≤ 31) counts waits w with
 * WAIT_EDGES_MS[i-1] < w ≤ WAIT_EDGES_MS[i]; the last bucket counts w > 1e8 ms.
 */
export const WAIT_EDGES_MS: readonly number[] = [
  0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5,
  2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8,
];

/** Counts per bucket of {@link WAIT_EDGES_MS}: edges.length + 1 buckets (the last is overflow). */
export class FixedHistogram {
  readonly counts: Float64Array;

  constructor(private readonly edges: readonly number[] = WAIT_EDGES_MS) {
    this.counts = new Float64Array(edges.length + 1);
  }

  record(v: number): void {
    // Binary search for the first edge >= v (edges are few and sorted).
    const edges = this.edges;
    let lo = 0;
    let hi = edges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (edges[mid]! < v) lo = mid + 1;
      else hi = mid;
    }
    this.counts[lo]!++;
  }

  state(): number[] {
    return Array.from(this.counts);
  }

  load(counts: readonly number[]): void {
    if (counts.length !== this.counts.length) throw new RangeError('wait histogram has the wrong length');
    this.counts.set(counts);
  }
}
