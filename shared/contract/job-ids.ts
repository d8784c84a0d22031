/**
 * The deterministic BullMQ job id of each kind of work (DESIGN.md §4.6): adding the same id
 * twice is a no-op, which makes every dispatch idempotent. Views show them (`job_id`) so a
 * client can look a resource's job up under `GET /v1/jobs/:queue/:jobId`.
 */
export const backupJobId = (backupId: string) => `backup-${backupId}`;
export const verifyJobId = (backupId: string, verificationId: string) =>
  `verify-${backupId}-${verificationId}`;
export const simulationJobId = (simulationId: string) => `sim-${simulationId}`;
export const pruneJobId = (runId: string) => `prune-${runId}`;
export const probeRunJobId = (runId: string) => `probe-run-${runId}`;
