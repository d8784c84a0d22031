import { pino, type Logger, type DestinationStream } from 'pino';
// Kept here too: logging is where most callers need it.
export { redactUrl } from './redact-url';

export type { Logger };

/**
 * Structured logs. Field names the code agrees on: request_id, queue, job_id, job_name,
 * scope (lock scope), fence (fencing token), component.
 * Secrets are redacted by path: Authorization headers and anything named key/password.
 */
export function createLogger(
  opts: { level?: string; name?: string; base?: Record<string, unknown> } = {},
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      name: opts.name,
      base: { pid: process.pid, ...opts.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers.cookie',
          'headers.authorization',
          'authorization',
          'password',
          'secret',
          'key',
          'api_key',
          'admin_key',
          '*.password',
          '*.secret',
          '*.api_key',
          'config.TASKYARD_ADMIN_KEY',
          'config.DATABASE_URL',
          'config.REDIS_URL',
        ],
        censor: '[redacted]',
      },
      serializers: { err: pino.stdSerializers.err },
    },
    destination,
  );
}

/**
 * An 'error' listener for a connection that retries by itself (ioredis reconnects every
 * couple of seconds while Redis is away): the first error, and each new message, at warn;
 * the same message again at most once a minute. `suppressed` on a line counts the errors
 * left out since the previous line. An outage then shows in the log without flooding it.
 */
export function connectionErrorLogger(
  logger: Logger,
  msg: string,
  fields: Record<string, unknown> = {},
  everyMs = 60_000,
): (err: Error) => void {
  let lastMessage: string | undefined;
  let lastAt = 0;
  let suppressed = 0;
  return (err: Error) => {
    const now = Date.now();
    const message = connectionErrorMessage(err);
    if (message === lastMessage && now - lastAt < everyMs) {
      suppressed++;
      return;
    }
    logger.warn({ ...fields, err: { message }, ...(suppressed > 0 ? { suppressed } : {}) }, msg);
    lastMessage = message;
    lastAt = now;
    suppressed = 0;
  };
}

/**
 * A connection error's message. Connecting to a host name with several addresses (localhost:
 * ::1 and 127.0.0.1) fails with an AggregateError whose own message is empty; its parts say
 * what happened.
 */
function connectionErrorMessage(err: Error): string {
  if (err.message !== '') return err.message;
  if (err instanceof AggregateError && err.errors.length > 0) {
    return err.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ');
  }
  return (err as NodeJS.ErrnoException).code ?? err.name;
}

/** Run a listener so that its failure is logged and never takes the process down. */
export function containListener<A extends unknown[]>(
  logger: Logger,
  what: string,
  fn: (...args: A) => unknown,
): (...args: A) => void {
  return (...args: A) => {
    try {
      const r = fn(...args);
      if (r && typeof (r as Promise<unknown>).catch === 'function') {
        (r as Promise<unknown>).catch((err: unknown) => logger.error({ err }, `listener ${what} failed`));
      }
    } catch (err) {
      logger.error({ err }, `listener ${what} failed`);
    }
  };
}
