/** `npm run bench`: measure, print, and write bench/RESULTS.md. */
import { renderResults, writeResults } from './results';
import { benchWorkerThroughput } from './worker-throughput';

async function main(): Promise<void> {
  console.log('worker runtime throughput…');
  const worker = await benchWorkerThroughput();
  const md = renderResults([
    {
      title: 'Worker runtime',
      figures: worker,
      notes: [
        'Both variants drain the same pre-filled queue of no-op jobs; time runs from worker start to the last completion (polled every 20 ms).',
        'The taskyard variant logs every job transition at info (to /dev/null) and validates each payload with zod.',
      ],
    },
  ]);
  const file = writeResults(md);
  console.log(md);
  console.log(`written to ${file}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
