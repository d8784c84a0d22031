import { randomUUID } from 'node:crypto';
import type { StoredResponse } from '../shared/db/idempotency-store';
import { insertOutboxRow } from '../shared/db/outbox-store';
import { insertPruningRun, type PruningRunRow } from '../shared/db/pruning-store';
import type { ClaimCompleter, ProducerDeps } from './backup-producer';
import { dispatchOutboxRow } from './outbox-dispatch';
import { groupCommit } from '../shared/db/group-commit';

export { pruneJobId } from '../shared/contract/job-ids';
import { pruneJobId } from '../shared/contract/job-ids';

/**
 * DESIGN.md §3 steps 4–5 for a pruning run: one transaction writes the run (queued), its
 * outbox row and the completed idempotency record; after commit the `prune` job is enqueued.
 * An enqueue failure does not fail the request: the relay dispatches the row later.
 */
export async function requestPruningRun(
  deps: ProducerDeps,
  input: { dryRun: boolean; claim?: ClaimCompleter; respond: (row: PruningRunRow) => StoredResponse },
): Promise<{ row: PruningRunRow; response: StoredResponse }> {
  const id = randomUUID();
  const now = deps.clock.now().getTime();
  const { row, response, outbox } = await groupCommit(deps.db, async (trx) => {
    const row = await insertPruningRun(trx, { id, trigger: 'manual', dryRun: input.dryRun, now });
    const outbox = await insertOutboxRow(trx, {
      queue: 'pruning',
      jobName: 'prune',
      jobId: pruneJobId(id),
      payload: { run_id: id, dry_run: input.dryRun },
      now,
    });
    const response = input.respond(row);
    await input.claim?.complete(trx, response);
    return { row, response, outbox };
  });
  deps.logger.info({ pruning_run_id: id, status: 'queued', dry_run: input.dryRun }, 'pruning run requested');
  await deps.afterCommit?.();
  await dispatchOutboxRow(deps, outbox);
  return { row, response };
}
