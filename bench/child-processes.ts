/**
 * Child processes and temporary directories of the benchmarks, tracked so that nothing
 * outlives `npm run bench`: normal paths stop them in `finally`, and a last-resort `exit`
 * hook kills whatever is left (SIGKILL) and removes leftover directories synchronously.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();

process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under the OS temp dir, removed by removeTempDir or at exit. */
export function makeTempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `taskyard-bench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

export interface Spawned {
  child: ChildProcess;
  /** Resolves with the exit code (or the signal name) once the process is gone. */
  exited: Promise<number | string>;
  /** Last ~8 KiB of stderr, for error messages. */
  stderrTail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

/** Spawn a tracked child; stdout goes to `onStdoutLine` (or is drained), stderr is kept in a tail. */
export function spawnTracked(
  command: string,
  args: string[],
  opts: SpawnOptions & { onStdoutLine?: (line: string) => void } = {},
): Spawned {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  live.add(child);
  let tail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    tail = (tail + s).slice(-8192);
  });
  let pending = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => {
    if (!opts.onStdoutLine) return;
    pending += s;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      opts.onStdoutLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('error', (err) => {
      tail += `\n${err.message}`;
      live.delete(child);
      resolve('spawn-error');
    });
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve(code ?? signal ?? 'unknown');
    });
  });
  return {
    child,
    exited,
    stderrTail: () => tail,
    async stop(graceMs = 10_000) {
      if (!live.has(child)) return;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, graceMs);
      });
      await Promise.race([exited, deadline]);
      clearTimeout(timer);
      await exited;
    },
  };
}

/**
 * Run a command to completion and return its wall time in seconds.
 * @throws Error with the stderr tail when it exits non-zero.
 */
export async function timeCommand(command: string, args: string[], opts: SpawnOptions = {}): Promise<number> {
  const t0 = performance.now();
  const p = spawnTracked(command, args, opts);
  const code = await p.exited;
  const secs = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${code}: ${p.stderrTail()}`);
  return secs;
}
