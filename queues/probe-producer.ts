import { randomUUID } from 'node:crypto';
import type { StoredResponse } from '../shared/db/idempotency-store';
import { insertOutboxRow } from '../shared/db/outbox-store';
import { insertProbeRun, type ProbeRunRow } from '../shared/db/probe-runs-store';
import { deterministicUuid } from '../shared/deterministic-uuid';
import type { ClaimCompleter, ProducerDeps } from './backup-producer';
import { dispatchOutboxRow } from './outbox-dispatch';
import { groupCommit } from '../shared/db/group-commit';

export { probeRunJobId } from '../shared/contract/job-ids';
import { probeRunJobId } from '../shared/contract/job-ids';

/** The probe run id of a scheduled cycle, derived from its BullMQ job id: one row per tick. */
export const scheduledProbeRunId = (jobId: string) =>
  deterministicUuid('taskyard-scheduled-probe-run', jobId);

/**
 * POST /v1/probes/runs: one transaction writes the run (queued, manual), its outbox row and
 * the completed idempotency record; after commit the probe-cycle job is enqueued. An
 * enqueue failure does not fail the request: the relay dispatches the row later.
 */
export async function requestProbeRun(
  deps: ProducerDeps,
  input: { claim?: ClaimCompleter; respond: (row: ProbeRunRow) => StoredResponse },
): Promise<{ row: ProbeRunRow; response: StoredResponse }> {
  const id = randomUUID();
  const now = deps.clock.now().getTime();
  const { row, response, outbox } = await groupCommit(deps.db, async (trx) => {
    const row = await insertProbeRun(trx, { id, trigger: 'manual', now });
    const outbox = await insertOutboxRow(trx, {
      queue: 'probes',
      jobName: 'probe-cycle',
      jobId: probeRunJobId(id),
      payload: { run_id: id },
      now,
    });
    const response = input.respond(row);
    await input.claim?.complete(trx, response);
    return { row, response, outbox };
  });
  deps.logger.info({ probe_run_id: id, status: 'queued' }, 'probe run requested');
  await deps.afterCommit?.();
  await dispatchOutboxRow(deps, outbox);
  return { row, response };
}
