/**
 * `npm run bench`: measure, print, and write bench/RESULTS.md.
 * BENCH_ONLY=worker,enqueue,backup,simulation,pruning (comma-separated) runs a subset; the
 * default is all of them.
 */
import { benchBackup } from './backup';
import { benchEnqueue } from './enqueue';
import { benchPruning, type PruningFigures } from './pruning';
import { renderResults, writeResults, type Figure } from './results';
import { benchSimulation } from './simulation';
import { benchWorkerThroughput } from './worker-throughput';

type Section = { title: string; figures: Figure[]; notes?: string[] };

const SECTIONS = ['worker', 'enqueue', 'backup', 'simulation', 'pruning'] as const;

const BACKEND_NAME = { sqlite: 'SQLite', postgres: 'Postgres' } as const;

/** Pruning output as figures: the rate alone, and the api's p99 without vs during pruning. */
function pruningSection(results: PruningFigures[]): Section {
  const figures: Figure[] = [];
  const notes: string[] = [];
  for (const r of results) {
    const b = BACKEND_NAME[r.backend];
    figures.push(
      {
        name: `expired idempotency records pruned, ${b} (${r.rows.toLocaleString('en-US')} rows, api under load)`,
        value: r.rows_per_s,
        unit: 'rows/s',
      },
      {
        name: `api p99 without pruning, ${b} (GET /v1/pruning/runs/:id, 10 connections)`,
        value: r.p99_ms_without,
        unit: 'ms',
        reference: { name: 'api p99 during pruning, same api and load', value: r.p99_ms_during },
        targetRatio: 0.5,
      },
    );
    notes.push(
      `${b}: ${r.rows.toLocaleString('en-US')} rows pruned in ${r.seconds} s; p99 ${r.p99_ms_without} ms without → ${r.p99_ms_during} ms during pruning (during / without = ${r.p99_ratio}); ${r.requests_during.toLocaleString('en-US')} requests answered during pruning.`,
    );
  }
  notes.unshift(
    'The target is "p99 during pruning ≤ 2 × p99 without". The table judges value / reference ≥ target, so the p99 row puts p99 without as the value and p99 during as the reference: ratio = without / during, met when ≥ 0.5 (i.e. during ≤ 2 × without). The rows/s figure has no reference and no target.',
    "Per backend (bench/pruning.ts): a migrated database seeded with expired `idempotency_keys` rows (not timed); the api runs as its own process and autocannon (10 connections, in the bench process) sends authenticated `GET /v1/pruning/runs/:id` for a 2 s warm-up, then BENCH_PRUNE_BASELINE_S (10) s without pruning, then for as long as the bench process runs `runPruning` (the prune job's code, as a worker runs it) over all rows. autocannon reports latency in whole ms.",
  );
  return { title: 'Pruning under api load', figures, notes };
}

async function main(): Promise<void> {
  const only = (process.env.BENCH_ONLY ?? SECTIONS.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = only.filter((s) => !(SECTIONS as readonly string[]).includes(s));
  if (unknown.length > 0)
    throw new Error(`BENCH_ONLY: unknown section(s) ${unknown.join(', ')}; use ${SECTIONS.join(', ')}`);
  const sections: Section[] = [];

  if (only.includes('worker')) {
    console.log('worker runtime throughput…');
    const worker = await benchWorkerThroughput();
    sections.push({
      title: 'Worker runtime',
      figures: worker,
      notes: [
        'Both variants drain the same pre-filled queue of no-op jobs; time runs from worker start to the last completion (polled every 20 ms).',
        "The taskyard runtime validates each payload with zod, gives the job a context whose AbortSignal is built only if the processor reads it (the no-op processor does not), and logs per job at the queue's level (pino at info, to /dev/null): the noop queue, like the maintenance ticks, logs `job completed` at debug; the second row logs it at info, as the domain queues do, to show what a line per job costs.",
      ],
    });
  }

  if (only.includes('enqueue')) {
    console.log('enqueue through the api (autocannon)…');
    const enqueue = await benchEnqueue();
    sections.push({ title: 'Enqueue through the api', ...enqueue });
  }

  if (only.includes('backup')) {
    console.log('backup speed…');
    const backup = await benchBackup();
    sections.push({ title: 'Backup speed', ...backup });
  }

  if (only.includes('simulation')) {
    console.log('simulation engine, with and without checkpointing…');
    const simulation = await benchSimulation();
    sections.push({ title: 'Simulation engine', ...simulation });
  }

  if (only.includes('pruning')) {
    const results: PruningFigures[] = [];
    for (const backend of ['sqlite', 'postgres'] as const) {
      console.log(`pruning under api load, ${backend}…`);
      results.push(await benchPruning(backend));
      console.log(`  ${JSON.stringify(results.at(-1))}`);
    }
    sections.push(pruningSection(results));
  }

  const md = renderResults(sections);
  const file = writeResults(md);
  console.log(md);
  console.log(`written to ${file}`);
}

// A signal ends the run through process.exit, so the exit hook in child-processes.ts kills
// spawned servers and removes temp dirs.
process.once('SIGINT', () => process.exit(130));
process.once('SIGTERM', () => process.exit(143));

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
