/**
 * `npm run bench`: measure, print, and write bench/RESULTS.md.
 * BENCH_ONLY=worker,enqueue,backup (comma-separated) runs a subset; the default is all three.
 */
import { benchBackup } from './backup';
import { benchEnqueue } from './enqueue';
import { renderResults, writeResults, type Figure } from './results';
import { benchWorkerThroughput } from './worker-throughput';

type Section = { title: string; figures: Figure[]; notes?: string[] };

const SECTIONS = ['worker', 'enqueue', 'backup'] as const;

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
        'The taskyard variant logs every job transition at info (to /dev/null) and validates each payload with zod.',
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
