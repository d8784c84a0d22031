/**
 * Simulation engine speed on one core, with and without checkpointing (issue 4).
 *
 * Scenario: M/M/8 at ρ = λ·s/c = 64/s · 0.1 s / 8 = 0.8 (Poisson arrivals at 64/s,
 * exponential service with mean 100 ms, 8 servers, unlimited line), 10,000,000 customers of
 * which 1,000,000 are warmup, seed 42. Every variant drives a fresh engine with the
 * production driver (`drive`) in this process, on this thread; variants alternate within a
 * round (the order rotates each round) and the median of the rounds is reported.
 *
 * Variants: no checkpoint; a checkpoint every 5 s (the production default) whose handler
 * does `JSON.stringify(checkpoint)`; every 1 s and every 100 ms as stress figures. All of them
 * must give a byte-identical result, or the run throws.
 *
 * Run alone: `node --import tsx bench/simulation.ts`.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ResolvedScenario } from '../shared/contract/simulation';
import { drive } from '../workers/simulation/driver';
import { createEngine } from '../workers/simulation/engine';
import type { Figure } from './results';

const CUSTOMERS = Number(process.env.BENCH_SIM_CUSTOMERS ?? 10_000_000);
const ROUNDS = Number(process.env.BENCH_SIM_ROUNDS ?? 3);

const SCENARIO: ResolvedScenario = {
  arrival: { process: 'poisson', rate_per_s: 64 },
  service: { distribution: 'exponential', mean_ms: 100 },
  servers: 8,
  customers: CUSTOMERS,
  warmup_customers: Math.floor(CUSTOMERS / 10),
  seed: 42,
};

/** Offered load per server; checked so a scenario edit cannot silently change the figure. */
const RHO = (SCENARIO.arrival.rate_per_s * (SCENARIO.service.mean_ms / 1000)) / SCENARIO.servers;

interface Variant {
  key: 'none' | 'every5s' | 'every1s' | 'every100ms';
  label: string;
  checkpointEveryMs: number;
}

const VARIANTS: Variant[] = [
  { key: 'none', label: 'no checkpoint', checkpointEveryMs: Infinity },
  { key: 'every5s', label: 'checkpoint every 5 s', checkpointEveryMs: 5000 },
  { key: 'every1s', label: 'checkpoint every 1 s', checkpointEveryMs: 1000 },
  { key: 'every100ms', label: 'checkpoint every 100 ms', checkpointEveryMs: 100 },
];

interface RunOutcome {
  /** Wall-clock seconds. */
  seconds: number;
  /** CPU seconds of this process (user + system) over the run. */
  cpuSeconds: number;
  events: number;
  checkpoints: number;
  checkpointBytes: number;
  result: string;
}

function runOnce(scenario: ResolvedScenario, checkpointEveryMs: number): RunOutcome {
  const engine = createEngine(scenario);
  let checkpoints = 0;
  let checkpointBytes = 0;
  let lastProgress = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const outcome = drive(engine, {
    // Production posts progress to the parent; keeping the value is the engine-side cost here.
    onProgress: (p) => {
      lastProgress = p.progress;
    },
    onCheckpoint: (cp) => {
      // The engine thread's share of a checkpoint: build it (done by drive) and serialise it.
      const json = JSON.stringify(cp);
      checkpoints++;
      checkpointBytes = Math.max(checkpointBytes, Buffer.byteLength(json));
    },
    isCancelled: () => false,
    monotonicMs: () => performance.now(),
    checkpointEveryMs,
  });
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(c0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  if (outcome !== 'done' || lastProgress !== 1) throw new Error(`simulation did not finish (${outcome})`);
  return {
    seconds,
    cpuSeconds,
    events: engine.events,
    checkpoints,
    checkpointBytes,
    result: JSON.stringify(engine.result()),
  };
}

/** Cost of one checkpoint on the engine thread, measured directly on an engine half-way through. */
function checkpointCost(): { stringifyMs: number; cloneMs: number; bytes: number } {
  const engine = createEngine(SCENARIO);
  engine.step(CUSTOMERS); // ~half the events: a mid-run state with full histograms
  const stringify: number[] = [];
  const clone: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 200; i++) {
    let t = performance.now();
    bytes = Buffer.byteLength(JSON.stringify(engine.checkpoint()));
    stringify.push(performance.now() - t);
    t = performance.now();
    structuredClone(engine.checkpoint());
    clone.push(performance.now() - t);
  }
  return { stringifyMs: median(stringify), cloneMs: median(clone), bytes };
}

function fmtLoad(l: number[]): string {
  return l.map((x) => x.toFixed(2)).join('/');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export async function benchSimulation(): Promise<{ figures: Figure[]; notes: string[] }> {
  if (Math.abs(RHO - 0.8) > 1e-12) throw new Error(`scenario load is ${RHO}, expected ρ = 0.8`);
  const loadBefore = os.loadavg();
  // Warm-up (JIT of the engine and driver), not counted.
  runOnce({ ...SCENARIO, customers: 1_000_000, warmup_customers: 100_000 }, 100);

  const runs = new Map<Variant['key'], RunOutcome[]>(VARIANTS.map((v) => [v.key, []]));
  let reference: string | undefined;
  for (let r = 0; r < ROUNDS; r++) {
    const order = VARIANTS.map((_, i) => VARIANTS[(i + r) % VARIANTS.length]!);
    const line: string[] = [];
    for (const v of order) {
      const out = runOnce(SCENARIO, v.checkpointEveryMs);
      reference ??= out.result;
      if (out.result !== reference) {
        throw new Error(
          `simulation result differs with "${v.label}" in round ${r + 1}: the benchmark changed the answer`,
        );
      }
      runs.get(v.key)!.push(out);
      line.push(
        `${v.key} ${(out.events / out.cpuSeconds / 1e6).toFixed(2)} M events/CPU-s, ${(out.events / out.seconds / 1e6).toFixed(2)} M/wall-s (${out.checkpoints} cp)`,
      );
    }
    console.log(`  round ${r + 1}: ${line.join(', ')}`);
  }
  const cost = checkpointCost();
  const loadAfter = os.loadavg();

  // Events per CPU-second of this process: "on one core", and unlike wall time it does not
  // count the time the thread waits for a core other processes on the machine hold.
  const eps = (k: Variant['key']) => median(runs.get(k)!.map((o) => o.events / o.cpuSeconds));
  const wallEps = (k: Variant['key']) => median(runs.get(k)!.map((o) => o.events / o.seconds));
  const wall = (k: Variant['key']) => median(runs.get(k)!.map((o) => o.seconds));
  const events = runs.get('none')![0]!.events;
  const cps = (k: Variant['key']) =>
    runs
      .get(k)!
      .map((o) => o.checkpoints)
      .join('/');
  const desc = `M/M/8 ρ=0.8, ${(CUSTOMERS / 1e6).toFixed(0)} M customers, seed 42, median of ${ROUNDS}`;
  const refName = `no checkpoint, same engine and process`;

  const figures: Figure[] = [
    {
      name: `engine events per CPU-second, checkpoint every 5 s (${desc})`,
      value: eps('every5s'),
      unit: 'events/s',
      reference: { name: refName, value: eps('none') },
      targetRatio: 0.95,
    },
    {
      name: `engine events per CPU-second, checkpoint every 1 s (stress)`,
      value: eps('every1s'),
      unit: 'events/s',
      reference: { name: refName, value: eps('none') },
    },
    {
      name: `engine events per CPU-second, checkpoint every 100 ms (stress)`,
      value: eps('every100ms'),
      unit: 'events/s',
      reference: { name: refName, value: eps('none') },
    },
    {
      name: `wall time for ${(CUSTOMERS / 1e6).toFixed(0)} M customers, checkpoint every 5 s`,
      value: wall('every5s'),
      unit: 's',
      reference: { name: 'no checkpoint, wall time', value: wall('none') },
    },
  ];

  const maxBytes = Math.max(cost.bytes, ...[...runs.values()].flat().map((o) => o.checkpointBytes));
  const notes = [
    `Scenario: Poisson arrivals 64/s, exponential service mean 100 ms, 8 servers, unlimited line (ρ = 64 · 0.1 / 8 = 0.8), ${CUSTOMERS.toLocaleString('en-US')} customers of which ${SCENARIO.warmup_customers!.toLocaleString('en-US')} warmup, seed 42: ${events.toLocaleString('en-US')} events per run. Each run drives a fresh engine with the production \`drive\` on the bench process's main thread (one core); the ${VARIANTS.length} variants alternate within each round (order rotated every round) after one uncounted warm-up run; each row is the median over the rounds.`,
    `events/s is per CPU-second of the bench process (process.cpuUsage, user + system; the engine is single-threaded, so this is one core, plus a little GC helper time), so that other work on the shared machine does not count against a variant; load average (1/5/15 min) ${fmtLoad(loadBefore)} before the section, ${fmtLoad(loadAfter)} after. Wall-clock medians, for comparison: no checkpoint ${(wallEps('none') / 1e6).toFixed(2)} M events/s, 5 s ${(wallEps('every5s') / 1e6).toFixed(2)} M, 1 s ${(wallEps('every1s') / 1e6).toFixed(2)} M, 100 ms ${(wallEps('every100ms') / 1e6).toFixed(2)} M.`,
    `All ${ROUNDS * VARIANTS.length} runs gave a byte-identical \`JSON.stringify(engine.result())\` (checked; a difference throws).`,
    `Checkpoint handler: \`JSON.stringify(checkpoint)\` after \`drive\` builds it with \`engine.checkpoint()\`. In production the engine thread (workers/simulation/thread.ts) hands the checkpoint object to the parent with postMessage (a structured clone), and the parent stringifies it and writes it to the database, off the engine thread; stringify stands in for that serialisation cost.`,
    `Checkpoints taken per run (rounds): 5 s ${cps('every5s')}, 1 s ${cps('every1s')}, 100 ms ${cps('every100ms')}. A whole run takes ${wall('every5s').toFixed(2)} s, so at the production interval of 5 s it finishes before its first checkpoint is due and the 5 s row can only show noise: its "met" says checkpointing does not slow the run, not what a checkpoint costs. The 1 s and 100 ms rows and the direct measurement below show that.`,
    `One checkpoint measured directly on an engine half-way through (median of 200): \`engine.checkpoint()\` + JSON.stringify ${cost.stringifyMs.toFixed(3)} ms, \`engine.checkpoint()\` + structuredClone (serialise + deserialise, an upper bound for postMessage) ${cost.cloneMs.toFixed(3)} ms; i.e. ${((Math.max(cost.stringifyMs, cost.cloneMs) / 5000) * 100).toFixed(4)} % of a 5 s interval (target ≤ 5 %). Checkpoint size: ${maxBytes.toLocaleString('en-US')} bytes of JSON (largest seen; mostly the wait and sojourn histograms).`,
  ];
  return { figures, notes };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { figures, notes } = await benchSimulation();
  console.log(JSON.stringify(figures, null, 2));
  for (const n of notes) console.log(`- ${n}`);
}
