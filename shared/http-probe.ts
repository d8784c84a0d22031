import http from 'node:http';
import https from 'node:https';

/**
 * One HTTP probe: a single request with a hard deadline, never following redirects.
 *
 * Why node:http and not fetch: every probe gets its own connection (`agent: false`, no
 * pool and no keep-alive), so one target's hanging sockets never queue another probe
 * behind a pool limit, the latency includes connecting as a client would, and the socket
 * error codes (ECONNREFUSED, HPE_*, TLS codes) classify failures without string matching.
 * The deadline is an AbortSignal (`AbortSignal.timeout`, combined with the caller's), so
 * it covers DNS, connect, TLS and the response head; the body is never read.
 */

export type ProbeErrorClass =
  | 'timeout'
  | 'connection_refused'
  | 'connection_reset'
  | 'dns'
  | 'tls'
  | 'bad_status'
  | 'invalid_response'
  | 'aborted'
  | 'error';

export interface ProbeTarget {
  url: string;
  method: 'GET' | 'HEAD';
  /** Inclusive range of statuses that count as healthy. */
  expectedStatus: { min: number; max: number };
  timeoutMs: number;
  headers?: Record<string, string> | null;
}

export interface ProbeResult {
  ok: boolean;
  /** The response status, when a response head arrived. */
  statusCode: number | null;
  latencyMs: number;
  /** Why it failed; null when ok. */
  errorClass: ProbeErrorClass | null;
}

const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_|SELF_SIGNED_|UNABLE_TO_|EPROTO$)/;

/** Map a request error to its class. `timedOut`/`aborted` come from our signals, not the error. */
export function classifyProbeError(err: unknown): ProbeErrorClass {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return 'error';
  if (code === 'ECONNREFUSED') return 'connection_refused';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNABORTED') return 'connection_reset';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME' || code === 'EAI_FAIL')
    return 'dns';
  if (TLS_CODE.test(code)) return 'tls';
  if (code.startsWith('HPE_')) return 'invalid_response';
  return 'error';
}

/**
 * Probe `target` once. Never rejects: every outcome, including a malformed URL, is a result.
 * @param opts.signal aborts the probe early (a lost lock, a shutdown): class `aborted`.
 * @param opts.monotonic milliseconds clock for the latency. @defaultValue performance.now
 */
export function probeHttp(
  target: ProbeTarget,
  opts: { signal?: AbortSignal; monotonic?: () => number } = {},
): Promise<ProbeResult> {
  const monotonic = opts.monotonic ?? (() => performance.now());
  const started = monotonic();
  const deadline = AbortSignal.timeout(target.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([deadline, opts.signal]) : deadline;
  const elapsed = () => Math.max(0, Math.round(monotonic() - started));

  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    const finish = (r: Omit<ProbeResult, 'latencyMs'>) => {
      if (settled) return;
      settled = true;
      resolve({ ...r, latencyMs: elapsed() });
    };
    const fail = (errorClass: ProbeErrorClass, statusCode: number | null = null) =>
      finish({ ok: false, statusCode, errorClass });

    let url: URL;
    try {
      url = new URL(target.url);
    } catch {
      fail('error');
      return;
    }
    const transport = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
    if (!transport) {
      fail('error');
      return;
    }
    if (signal.aborted) {
      fail(deadline.aborted ? 'timeout' : 'aborted');
      return;
    }

    let req: http.ClientRequest;
    try {
      req = transport.request(url, {
        method: target.method,
        headers: { 'user-agent': 'taskyard-probe/1', ...target.headers, connection: 'close' },
        agent: false,
        signal,
      });
    } catch {
      // Invalid header values are refused by validation; this guards what slipped through.
      fail('error');
      return;
    }
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      // The head is all a probe needs; drop the body and the connection.
      res.on('error', () => undefined);
      res.destroy();
      const ok = status >= target.expectedStatus.min && status <= target.expectedStatus.max;
      finish({ ok, statusCode: status, errorClass: ok ? null : 'bad_status' });
    });
    req.on('error', (err) => {
      if (signal.aborted) fail(deadline.aborted ? 'timeout' : 'aborted');
      else fail(classifyProbeError(err));
    });
    req.end();
  });
}
