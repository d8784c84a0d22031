import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, runCli } from '../../cli/taskyard';
import { simulationsQueue } from '../../queues/simulations';
import { BACKENDS, closedPort } from '../helpers/services';
import { startInProcessWorker } from '../helpers/worker-harness';
import { startApi, type ApiUnderTest } from './api.harness';

/** `taskyard simulate` against a real api and worker: start, follow, print the result. */
describe.each(BACKENDS)('taskyard simulate ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let worker: { stop(): Promise<void> };
  let dir: string;
  const scenarioFile = () => path.join(dir, 'scenario.json');

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('cli-simulate') });
    worker = await startInProcessWorker(api, [simulationsQueue]);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskyard-cli-simulate-'));
    fs.writeFileSync(
      scenarioFile(),
      JSON.stringify({
        arrival: { process: 'poisson', rate_per_s: 8 },
        service: { distribution: 'exponential', mean_ms: 100 },
        servers: 1,
        customers: 2000,
        seed: 7,
      }),
    );
  });
  afterAll(async () => {
    await worker?.stop();
    await api?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function run(args: string[], env: Record<string, string | undefined> = {}) {
    const out: string[] = [];
    const err: string[] = [];
    const code = runCli(['simulate', ...args], {
      env: { TASKYARD_API_KEY: api.keys.write, TASKYARD_URL: api.url, ...env },
      out: (t) => out.push(t),
      err: (t) => err.push(t),
    });
    return code.then((c) => ({ code: c, out: out.join('\n'), err: err.join('\n') }));
  }

  it('starts the run, follows it to the end and prints the succeeded run with its result', async () => {
    const r = await run([scenarioFile(), '--id', 'cli-sim-1']);
    expect(r.code).toBe(EXIT_OK);
    const view = JSON.parse(r.out) as {
      simulation_id: string;
      status: string;
      result: { customers: number };
    };
    expect(view).toMatchObject({ simulation_id: 'cli-sim-1', status: 'succeeded', job_id: 'sim-cli-sim-1' });
    expect(view.result.customers).toBe(2000);
    expect(r.err).toContain('simulation cli-sim-1: succeeded');

    // Again with the same id and scenario: the existing run, not a second one.
    const again = await run([scenarioFile(), '--id', 'cli-sim-1']);
    expect(again.code).toBe(EXIT_OK);
    expect(JSON.parse(again.out)).toEqual(view);
  });

  it('--no-follow prints the queued run at once', async () => {
    const r = await run([scenarioFile(), '--id', 'cli-sim-2', '--no-follow']);
    expect(r.code).toBe(EXIT_OK);
    expect(JSON.parse(r.out)).toMatchObject({ simulation_id: 'cli-sim-2', status: 'queued' });
  });

  it('an id whose run was pruned is refused, saying so', async () => {
    // What retention pruning leaves of a run: its id, stamped.
    await api.db.db
      .insertInto('simulation_ids')
      .values({ id: 'cli-sim-pruned', created_at: 1, pruned_at: 2 })
      .execute();
    const r = await run([scenarioFile(), '--id', 'cli-sim-pruned', '--no-follow']);
    expect(r.code).not.toBe(EXIT_OK);
    expect(r.err).toContain('simulation id "cli-sim-pruned" belonged to a run that was pruned');
  });

  it('says what is wrong: no key, a read-only key, a bad id, a bad scenario, a missing file', async () => {
    const noKey = await run([scenarioFile()], { TASKYARD_API_KEY: undefined });
    expect(noKey.code).toBe(EXIT_USAGE);
    expect(noKey.err).toContain('TASKYARD_API_KEY');

    const readOnly = await run([scenarioFile(), '--id', 'cli-sim-3'], { TASKYARD_API_KEY: api.keys.read });
    expect(readOnly.code).toBe(EXIT_FAILED);
    expect(readOnly.err).toMatch(/write/);
    expect(readOnly.err).not.toContain(api.keys.read);

    const badId = await run([scenarioFile(), '--id', '-nope']);
    expect(badId.code).toBe(EXIT_USAGE);

    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ servers: 0 }));
    const invalid = await run([bad, '--id', 'cli-sim-4']);
    expect(invalid.code).toBe(EXIT_FAILED);
    expect(invalid.err).toContain('is not valid');
    expect(invalid.err).toContain('servers');

    const missing = await run([path.join(dir, 'nope.json')]);
    expect(missing.code).toBe(EXIT_FAILED);
    expect(missing.err).toContain('no scenario file');

    // The whole POST body pasted into the file: told to keep only the scenario.
    const whole = path.join(dir, 'whole-body.json');
    fs.writeFileSync(whole, JSON.stringify({ simulation_id: 'x', scenario: { servers: 1 } }));
    const pasted = await run([whole]);
    expect(pasted.code).toBe(EXIT_FAILED);
    expect(pasted.err).toContain(`${whole} holds a "scenario" key: put only the scenario object in the file`);
  });

  it('an api it cannot reach is named, with how to point at another one', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const r = await run([scenarioFile(), '--id', 'cli-sim-unreachable'], { TASKYARD_URL: url });
    expect(r.code).toBe(EXIT_FAILED);
    expect(r.err).toContain(
      `could not reach the taskyard api at ${url} (ECONNREFUSED): is it running there?`,
    );
    expect(r.err).toContain('set --url or TASKYARD_URL');
  });
});
