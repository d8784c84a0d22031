import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, TaskyardProblemError, type TaskyardClient } from '../../shared/client/index';
import { BACKENDS } from '../helpers/services';
import { startApi, type ApiUnderTest } from './api.harness';

const scenario = {
  arrival: { process: 'poisson' as const, rate_per_s: 8 },
  service: { distribution: 'exponential' as const, mean_ms: 100 },
  servers: 1,
  customers: 1000,
};

describe.each(BACKENDS)('client startSimulation ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let client: TaskyardClient;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('client-sim') });
    client = createClient({ baseUrl: api.url, apiKey: api.keys.write, retry: { attempts: 1 } });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('starts a new run and returns it, with the seed the server chose', async () => {
    const run = await client.startSimulation({ simulation_id: 'client-1', scenario });
    expect(run).toMatchObject({ simulation_id: 'client-1', status: 'queued' });
    expect(Number.isInteger(run.scenario.seed)).toBe(true);
  });

  it('on 409 returns the existing run when the scenario is the same (no seed given)', async () => {
    const first = await client.getSimulation('client-1');
    const again = await client.startSimulation({ simulation_id: 'client-1', scenario });
    expect(again.simulation_id).toBe('client-1');
    expect(again.scenario.seed).toBe(first.scenario.seed);
  });

  it('on 409 returns the existing run when the request names the same seed', async () => {
    const first = await client.getSimulation('client-1');
    const again = await client.startSimulation({
      simulation_id: 'client-1',
      scenario: { ...scenario, seed: first.scenario.seed },
    });
    expect(again.scenario.seed).toBe(first.scenario.seed);
  });

  it.each([
    ['another seed', { ...scenario, seed: 1 }],
    ['more servers', { ...scenario, servers: 2 }],
    ['another arrival rate', { ...scenario, arrival: { process: 'poisson' as const, rate_per_s: 9 } }],
  ])('throws the 409 when the existing run differs by %s', async (_what, other) => {
    const err = await client
      .startSimulation({ simulation_id: 'client-1', scenario: other })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskyardProblemError);
    expect((err as TaskyardProblemError).status).toBe(409);
    expect((err as TaskyardProblemError).slug).toBe('simulation-exists');
  });

  it('a bad scenario fails locally with every problem, before any request', async () => {
    const before = await api.db.db
      .selectFrom('simulations')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    await expect(
      client.startSimulation({
        simulation_id: 'client-bad',
        scenario: { ...scenario, servers: 0, customers: -1 },
      }),
    ).rejects.toThrow(/servers[\s\S]*customers|customers[\s\S]*servers/);
    const after = await api.db.db
      .selectFrom('simulations')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));
  });
});
