import { pino, type Logger, type DestinationStream } from 'pino';

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

/** Remove credentials from a URL before it is logged or shown. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}
