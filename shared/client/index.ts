import { backupsClient, type BackupsClient } from './backups';
import { createHttpClient, type HttpClient, type HttpClientOptions } from './http-client';
import { simulationsClient, type SimulationsClient } from './simulations';

/**
 * The typed taskyard HTTP client (DESIGN.md §2), used by the CLI and the e2e tests.
 *
 * ```ts
 * const client = createClient({ baseUrl: 'http://127.0.0.1:3000', apiKey });
 * const backup = await client.createBackup({ label: 'before upgrade' });
 * ```
 */
export type ClientOptions = HttpClientOptions;

export interface TaskyardClient extends BackupsClient, SimulationsClient {
  /** The transport, for routes the typed methods do not cover yet. */
  readonly http: HttpClient;
}

/**
 * @throws TypeError when `baseUrl` is not an http(s) URL or `apiKey` is not a visible
 * ASCII string (checked up front so no request can leak a malformed key in an error)
 * @throws RangeError for a retry option out of range
 */
export function createClient(opts: ClientOptions): TaskyardClient {
  const http = createHttpClient(opts);
  return { http, ...backupsClient(http), ...simulationsClient(http) };
}

export { backupPageSchema, backupViewSchema, chooseIdempotencyKey } from './backups';
export {
  sameScenario,
  simulationViewSchema,
  type SimulationViewBody,
  type StartSimulationRequest,
} from './simulations';
export type {
  BackupPage,
  BackupsClient,
  CreateBackupOptions,
  ListBackupsOptions,
  VerifyBackupOptions,
} from './backups';
export type { HttpClient, HttpClientOptions, HttpResult, RequestSpec, Sleep } from './http-client';
export {
  parseRetryAfter,
  problemSlug,
  TaskyardNetworkError,
  TaskyardProblemError,
  TaskyardResponseError,
} from './problem-error';
export { DEFAULT_RETRY, isRetryable, retryDelayMs, type RetryOptions } from './retry-policy';
