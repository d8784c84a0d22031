import { rfc3339 } from '../shared/contract/common';
import type { ResolvedScenario } from '../shared/contract/simulation';
import type { StoredResponse } from '../shared/db/idempotency-store';
import { insertOutboxRow } from '../shared/db/outbox-store';
import {
  getSimulation,
  getClaimedSimulationId,
  insertSimulationIfAbsent,
  type SimulationRow,
} from '../shared/db/simulations-store';
import { SimulationExistsError } from '../shared/errors';
import type { ClaimCompleter, ProducerDeps } from './backup-producer';
import { dispatchOutboxRow } from './outbox-dispatch';
import { simulationsQueue } from './simulations';
import { groupCommit } from '../shared/db/group-commit';

export { simulationJobId } from '../shared/contract/job-ids';
import { simulationJobId } from '../shared/contract/job-ids';
export const simulationLocation = (simulationId: string) => `/v1/simulations/${simulationId}`;

/** The id is taken by a run that is no longer kept (`prunedAt` null: when was not recorded). */
function prunedSimulationExists(id: string, prunedAt: number | null): SimulationExistsError {
  const at = rfc3339(prunedAt);
  return new SimulationExistsError(
    `simulation_id ${id} belonged to a simulation that finished and was pruned${at ? ` on ${at}` : ''} (SIMULATION_RETENTION_DAYS); simulation ids are never reused. Choose another simulation_id.`,
    { prunedAt: at },
  );
}

/**
 * DESIGN.md §4.2: the claim of a simulation_id is the insert itself. One transaction writes
 * the queued row (INSERT … ON CONFLICT DO NOTHING), its outbox row and the completed
 * idempotency record; after commit the job is enqueued (a failure there is left to the
 * outbox relay, so a claim is never orphaned).
 * @throws SimulationExistsError (409, Location, `simulation` = `present(existing)`) when the
 * id is taken, whatever the existing run's scenario, or (`simulation` null, `pruned_at`) when
 * the run that had it was pruned; nothing is written then.
 */
export async function requestSimulation(
  deps: ProducerDeps,
  input: {
    simulationId: string;
    scenario: ResolvedScenario;
    createdBy: string | null;
    claim?: ClaimCompleter;
    respond: (row: SimulationRow) => StoredResponse;
    present: (row: SimulationRow) => unknown;
  },
): Promise<{ row: SimulationRow; response: StoredResponse }> {
  const id = input.simulationId;
  const now = deps.clock.now().getTime();
  const { row, response, outbox } = await groupCommit(deps.db, async (trx) => {
    const row = await insertSimulationIfAbsent(trx, {
      id,
      scenarioJson: JSON.stringify(input.scenario),
      createdBy: input.createdBy,
      now,
    });
    if (!row) {
      // DO NOTHING waited for any concurrent claimer to commit, so the winner's row is visible.
      const existing = await getSimulation(trx, id);
      if (existing) {
        throw new SimulationExistsError(
          `A simulation with simulation_id ${id} exists (status ${existing.status}); simulation ids are never reused. GET its Location for the run.`,
          { simulation: input.present(existing), location: simulationLocation(id) },
        );
      }
      throw prunedSimulationExists(id, (await getClaimedSimulationId(trx, id))?.prunedAt ?? null);
    }
    const outbox = await insertOutboxRow(trx, {
      queue: simulationsQueue.name,
      jobName: 'run-simulation',
      jobId: simulationJobId(id),
      payload: { simulation_id: id },
      now,
    });
    const response = input.respond(row);
    await input.claim?.complete(trx, response);
    return { row, response, outbox };
  });
  deps.logger.info(
    { simulation_id: id, status: 'queued', seed: input.scenario.seed },
    'simulation requested',
  );
  await deps.afterCommit?.();
  await dispatchOutboxRow(deps, outbox);
  return { row, response };
}
