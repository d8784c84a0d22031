import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Spawned taskyard processes for e2e tests: their stdout JSON log lines are collected,
 * tests wait for a line matching a predicate (with a deadline, never a fixed sleep), and
 * every child is tracked so an afterEach can kill leftovers and fail the test that leaked one.
 */

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every stdout line that parsed as JSON, in order. */
  readonly logs: readonly LogLine[];
  /** stdout lines that were not JSON, and all of stderr. */
  readonly text: () => string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ExitStatus>;
  /** Whether the process is still running. */
  readonly running: () => boolean;
  /**
   * The first log line (already seen or still to come) matching `predicate`.
   * @throws when the deadline passes or the process exits first; the message carries the output tail.
   */
  waitForLog(
    predicate: (line: LogLine) => boolean,
    opts?: { timeoutMs?: number; what?: string },
  ): Promise<LogLine>;
  /** Resolves with the exit status, or throws after `timeoutMs`. */
  waitForExit(timeoutMs?: number): Promise<ExitStatus>;
  signal(sig: NodeJS.Signals): void;
  /** SIGKILL (if still running) and wait for the exit. */
  kill(): Promise<ExitStatus>;
}

const live = new Set<SpawnedProcess>();

export function spawnProcess(
  name: string,
  command: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): SpawnedProcess {
  const child = spawn(command, args, {
    cwd: opts.cwd ?? PROJECT_ROOT,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`could not spawn ${name}: ${command} ${args.join(' ')}`);

  const logs: LogLine[] = [];
  const text: string[] = [];
  const waiters = new Set<() => void>();
  let exitStatus: ExitStatus | undefined;
  const notify = () => {
    for (const w of [...waiters]) w();
  };

  let partial = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      if (line.trim() === '') continue;
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        text.push(line);
      }
    }
    notify();
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => text.push(chunk));

  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = { code, signal };
      resolve(exitStatus);
      notify();
    });
  });

  const tail = () => {
    const lastLogs = logs.slice(-15).map((l) => JSON.stringify(l));
    return `--- last log lines of ${name} ---\n${lastLogs.join('\n')}\n--- other output ---\n${text.join('').slice(-3000)}`;
  };

  const proc: SpawnedProcess = {
    name,
    child,
    pid: child.pid,
    logs,
    text: () => text.join(''),
    exited,
    running: () => exitStatus === undefined,
    waitForLog(predicate, { timeoutMs = 20_000, what = 'a matching log line' } = {}) {
      return new Promise<LogLine>((resolve, reject) => {
        let seen = 0;
        const done = (fn: () => void) => {
          waiters.delete(check);
          clearTimeout(timer);
          fn();
        };
        function check() {
          for (; seen < logs.length; seen++) {
            const line = logs[seen]!;
            if (predicate(line)) return done(() => resolve(line));
          }
          if (exitStatus !== undefined) {
            const status = JSON.stringify(exitStatus);
            done(() => reject(new Error(`${name} exited (${status}) before ${what}\n${tail()}`)));
          }
        }
        // Declared after `done`, which only runs once the timer exists.
        const timer = setTimeout(
          () =>
            done(() =>
              reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name}: ${what}\n${tail()}`)),
            ),
          timeoutMs,
        );
        waiters.add(check);
        check();
      });
    },
    async waitForExit(timeoutMs = 20_000) {
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([
          exited,
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`${name} did not exit within ${timeoutMs} ms\n${tail()}`)),
              timeoutMs,
            );
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    signal(sig) {
      if (exitStatus === undefined) child.kill(sig);
    },
    async kill() {
      if (exitStatus === undefined) child.kill('SIGKILL');
      return exited;
    },
  };
  live.add(proc);
  void exited.then(() => live.delete(proc));
  return proc;
}

/** `node --import tsx <script>` from the project root. */
export function spawnTsx(
  name: string,
  script: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): SpawnedProcess {
  return spawnProcess(name, process.execPath, ['--import', 'tsx', script, ...args], { env });
}

/**
 * For afterEach: kill every child still running and fail if there was any, naming them,
 * so a test that forgets to stop its processes is reported rather than leaking them.
 */
export async function assertNoLeakedChildren(): Promise<void> {
  const leaked = [...live];
  await Promise.all(leaked.map((p) => p.kill()));
  if (leaked.length > 0) {
    throw new Error(
      `child process(es) still running after the test: ${leaked.map((p) => `${p.name} (pid ${p.pid})`).join(', ')}`,
    );
  }
}

/** Kill every tracked child without failing (afterAll safety net). */
export async function killAllChildren(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
}
