import type { ColumnType, Generated } from 'kysely';

/**
 * Table types shared by both dialects. Timestamps are epoch milliseconds (BIGINT on
 * Postgres, INTEGER on SQLite): one representation, exact comparisons for TTLs and
 * leases, and RFC 3339 only at the API edge. The Postgres pool parses INT8 as number.
 */

export interface ApiKeysTable {
  id: string;
  name: string;
  /** SHA-256 hex of the key; the key itself is never stored. */
  key_hash: string;
  /** Comma-separated scopes, e.g. `read,write`. */
  scopes: string;
  created_at: number;
  revoked_at: number | null;
  last_used_at: number | null;
}

export interface IdempotencyKeysTable {
  principal_id: string;
  key: string;
  /** SHA-256 of method, path and canonical JSON body. */
  fingerprint: string;
  state: 'in_flight' | 'completed';
  /** Random token of the current claim: completion and release are conditional on it. */
  claim_token: string;
  /** For in_flight claims: when a crashed holder's claim may be taken over. */
  lease_expires_at: number | null;
  response_status: number | null;
  response_body: string | null;
  response_location: string | null;
  created_at: number;
  expires_at: number;
}

export interface OutboxTable {
  id: string;
  queue: string;
  job_name: string;
  /** Deterministic BullMQ job id: dispatching twice is a no-op. */
  job_id: string;
  /** JSON */
  payload: string;
  created_at: number;
  dispatched_at: number | null;
  attempts: ColumnType<number, number | undefined, number>;
  last_error: string | null;
}

export interface SettingsTable {
  key: string;
  /** JSON */
  value: string;
  updated_at: number;
}

export interface SchemaMigrationsTable {
  name: string;
  checksum: string;
  applied_at: number;
}

export type BackupStatus = 'queued' | 'running' | 'succeeded' | 'failed';
export type VerifyStatus = 'queued' | 'running' | 'passed' | 'failed';

export interface BackupsTable {
  id: string;
  label: string | null;
  status: BackupStatus;
  trigger: 'manual' | 'scheduled';
  file_name: string | null;
  size_bytes: number | null;
  sha256: string | null;
  schema_version: string | null;
  /** JSON object: table → rows */
  row_counts: string | null;
  /** JSON object: table → sha256 of the table's canonical content */
  content_sha256: string | null;
  error: string | null;
  attempts: ColumnType<number, number | undefined, number>;
  fence: ColumnType<number, number | undefined, number>;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  verify_status: VerifyStatus | null;
  /** BullMQ job id of the latest verification, so the reconciler can find it. */
  verify_job_id: string | null;
  verified_at: number | null;
  verify_error: string | null;
  /** Set by `taskyard restore`: the row came from another install, and so did its file. */
  imported_at: number | null;
}

export type SimulationStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface SimulationsTable {
  /** The client-chosen simulation_id. */
  id: string;
  status: SimulationStatus;
  /** Resolved scenario (seed included), JSON. */
  scenario: string;
  /** 0..10000 */
  progress_bp: ColumnType<number, number | undefined, number>;
  /** SimulationResult JSON. */
  result: string | null;
  error: string | null;
  attempts: ColumnType<number, number | undefined, number>;
  fence: ColumnType<number, number | undefined, number>;
  cancel_requested_at: number | null;
  elapsed_ms: number | null;
  events: number | null;
  /** api_keys.id of the creator. */
  created_by: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

/** Every simulation_id ever claimed (DESIGN.md §4.2: unique forever, also after pruning). */
export interface SimulationIdsTable {
  id: string;
  created_at: number;
  /** When retention pruning deleted the run; null while it is kept. */
  pruned_at: number | null;
}

export interface SimulationCheckpointsTable {
  simulation_id: string;
  fence: number;
  /** EngineCheckpoint JSON. */
  state: string;
  progress_bp: number;
  events: number;
  saved_at: number;
}

export type ProviderState = 'unknown' | 'healthy' | 'degraded' | 'down';

export interface ProvidersTable {
  id: string;
  name: string;
  url: string;
  method: 'GET' | 'HEAD';
  expected_status_min: number;
  expected_status_max: number;
  timeout_ms: number;
  /** JSON object of extra request headers. */
  headers: string | null;
  /** 0 | 1 */
  enabled: ColumnType<number, number | undefined, number>;
  state: ProviderState;
  state_since: number;
  consecutive_failures: ColumnType<number, number | undefined, number>;
  consecutive_successes: ColumnType<number, number | undefined, number>;
  last_checked_at: number | null;
  last_latency_ms: number | null;
  fence: ColumnType<number, number | undefined, number>;
  created_at: number;
  updated_at: number;
}

export interface ProbeSamplesTable {
  id: string;
  provider_id: string;
  run_id: string | null;
  /** 0 | 1 */
  ok: number;
  status_code: number | null;
  latency_ms: number;
  error_class: string | null;
  checked_at: number;
}

export interface ProviderTransitionsTable {
  id: string;
  provider_id: string;
  from_state: ProviderState;
  to_state: ProviderState;
  at: number;
}

export type RunStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'skipped';

export interface ProbeRunsTable {
  id: string;
  trigger: 'manual' | 'scheduled';
  status: RunStatus;
  probed: ColumnType<number, number | undefined, number>;
  failed: ColumnType<number, number | undefined, number>;
  error: string | null;
  fence: ColumnType<number, number | undefined, number>;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

export interface PruningRunsTable {
  id: string;
  trigger: 'manual' | 'scheduled';
  /** 0 | 1 */
  dry_run: ColumnType<number, number | undefined, number>;
  status: RunStatus;
  /** JSON: kind → rows deleted (or that would be, for a dry run). */
  counts: string | null;
  error: string | null;
  fence: ColumnType<number, number | undefined, number>;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

export interface Database {
  simulations: SimulationsTable;
  simulation_checkpoints: SimulationCheckpointsTable;
  simulation_ids: SimulationIdsTable;
  providers: ProvidersTable;
  probe_samples: ProbeSamplesTable;
  provider_transitions: ProviderTransitionsTable;
  probe_runs: ProbeRunsTable;
  pruning_runs: PruningRunsTable;
  backups: BackupsTable;
  api_keys: ApiKeysTable;
  idempotency_keys: IdempotencyKeysTable;
  outbox: OutboxTable;
  settings: SettingsTable;
  schema_migrations: SchemaMigrationsTable;
}

export type { Generated };
