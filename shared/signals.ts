import type { Logger } from './logger';

/**
 * SIGTERM/SIGINT handling shared by every process entry (DESIGN.md §4.4): the first
 * signal starts a graceful stop, a second one exits at once.
 *
 * One Ctrl-C can reach a process twice: the terminal signals the whole foreground
 * process group, and `npm run` forwards the same SIGINT to its child. Signals within
 * `dedupeMs` of the first therefore count as the same signal.
 */
export function handleShutdownSignals(opts: {
  logger: Logger;
  /** Graceful stop; resolve to the exit code. */
  onFirst: (signal: NodeJS.Signals) => Promise<number>;
  /** Exit code for the second signal. @defaultValue 130 */
  immediateExitCode?: number;
  /** @defaultValue 1000 */
  dedupeMs?: number;
  exit?: (code: number) => never;
}): void {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const dedupeMs = opts.dedupeMs ?? 1000;
  let firstAt: number | undefined;
  const handler = (signal: NodeJS.Signals) => {
    const now = performance.now();
    if (firstAt === undefined) {
      firstAt = now;
      opts.logger.info({ signal }, 'shutdown requested: draining (send the signal again to exit at once)');
      opts.onFirst(signal).then(
        (code) => exit(code),
        (err: unknown) => {
          opts.logger.error({ err }, 'shutdown failed');
          exit(1);
        },
      );
      return;
    }
    if (now - firstAt < dedupeMs) return;
    opts.logger.warn({ signal }, 'second shutdown signal: exiting at once');
    exit(opts.immediateExitCode ?? 130);
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
