import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** One measured figure beside the reference it is judged against, both from the same run. */
export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** Absent for a figure with nothing to compare against (e.g. a rate measured on its own). */
  reference?: { name: string; value: number };
  /** value / reference must be at least this; absent for an informational figure (e.g. latency). */
  targetRatio?: number;
  notes?: string;
}

export function renderResults(
  sections: Array<{ title: string; figures: Figure[]; notes?: string[] }>,
): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu';
  const lines = [
    '# Benchmark results',
    '',
    `Written by \`npm run bench\` on ${new Date().toISOString()}.`,
    `Machine: ${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}.`,
    'Each figure is measured in the same run as its reference, on the same machine and Redis.',
    '',
  ];
  for (const s of sections) {
    lines.push(
      `## ${s.title}`,
      '',
      '| figure | value | reference | reference value | ratio | target | met |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const f of s.figures) {
      if (f.reference === undefined) {
        lines.push(`| ${f.name} | ${fmt(f.value)} ${f.unit} | — | — | — | — | — |`);
        continue;
      }
      const ratio = f.value / f.reference.value;
      // A reference of 0 (a latency under autocannon's 1 ms resolution) gives no ratio.
      const shown = Number.isFinite(ratio) ? ratio.toFixed(2) : '—';
      lines.push(
        `| ${f.name} | ${fmt(f.value)} ${f.unit} | ${f.reference.name} | ${fmt(f.reference.value)} ${f.unit} | ${shown} | ${target(f.targetRatio)} | ${met(ratio, f.targetRatio)} |`,
      );
    }
    lines.push('');
    for (const n of s.notes ?? []) lines.push(`- ${n}`);
    if (s.notes?.length) lines.push('');
  }
  return lines.join('\n');
}

function target(t: number | undefined): string {
  return t === undefined ? '—' : `≥ ${t}`;
}

function met(ratio: number, t: number | undefined): string {
  if (t === undefined) return '—';
  if (!Number.isFinite(ratio)) return 'no (no ratio)';
  return ratio >= t ? 'yes' : 'no';
}

function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2);
}

export function writeResults(markdown: string): string {
  const file = path.resolve(path.dirname(new URL(import.meta.url).pathname), 'RESULTS.md');
  fs.writeFileSync(file, markdown);
  return file;
}
