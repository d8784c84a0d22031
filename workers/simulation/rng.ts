/**
 * Seeded pseudo-random numbers for the simulation engine: xoshiro128** on uint32
 * arithmetic (Math.imul and unsigned shifts only), so a stream is the same on every
 * platform and its whole state is four integers that survive a JSON round trip.
 * Never Math.random: results must be reproducible from (scenario, seed).
 */

/** The serialisable state of one stream: four uint32 words, not all zero. */
export type RngState = [number, number, number, number];

const TWO_POW_MINUS_32 = 2 ** -32;

/** murmur3's 32-bit finaliser: a bijective avalanche mix, used only for seeding. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Derive the initial state of stream `stream` from a uint32 seed. Different streams of
 * one seed (arrivals, services) are independent for practical purposes: each word comes
 * from a distinct point of a Weyl sequence through an avalanche mix.
 */
export function seedState(seed: number, stream: number): RngState {
  const base = Math.imul(stream + 1, 0x632be5ab) ^ (seed >>> 0);
  const out: number[] = [];
  for (let i = 0; i < 4; i++) {
    out.push(fmix32((base + Math.imul(i + 1, 0x9e3779b9)) >>> 0) ^ fmix32((seed + i) >>> 0));
  }
  const state = out.map((w) => w >>> 0) as RngState;
  if ((state[0] | state[1] | state[2] | state[3]) === 0) state[0] = 1; // all-zero is a fixed point
  return state;
}

/** xoshiro128** (Blackman and Vigna): period 2^128 - 1, 32-bit outputs. */
export class Xoshiro128 {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(state: RngState) {
    this.a = state[0] >>> 0;
    this.b = state[1] >>> 0;
    this.c = state[2] >>> 0;
    this.d = state[3] >>> 0;
    if ((this.a | this.b | this.c | this.d) === 0)
      throw new RangeError('xoshiro128 state must not be all zero');
  }

  /** The next output as an unsigned 32-bit integer. */
  nextU32(): number {
    const b = this.b;
    const r = Math.imul(b, 5);
    const x = Math.imul((r << 7) | (r >>> 25), 9) >>> 0;
    const t = b << 9;
    this.c ^= this.a;
    this.d ^= b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = (this.d << 11) | (this.d >>> 21);
    return x;
  }

  /**
   * A uniform double strictly inside (0, 1): (k + 0.5) / 2^32 for a 32-bit k, so it can
   * be passed to Math.log without a zero check. 32 bits of resolution cap an exponential
   * sample at about 22.9 means (a tail probability of 1e-10), which no run can notice.
   */
  nextOpen01(): number {
    return (this.nextU32() + 0.5) * TWO_POW_MINUS_32;
  }

  /** Copy of the state, for checkpoints. */
  state(): RngState {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0];
  }

  /** Replace the state (e.g. to make one stream replay another from a point). */
  setState(from: Xoshiro128): void {
    this.a = from.a;
    this.b = from.b;
    this.c = from.c;
    this.d = from.d;
  }
}
