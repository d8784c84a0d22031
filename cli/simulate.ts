import fsp from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import { ZodError } from 'zod';
import {
  createClient,
  TaskyardNetworkError,
  TaskyardProblemError,
  type SimulationViewBody,
} from '../shared/client';
import type { SimulationScenarioInput } from '../shared/contract/simulation';

/** Where `simulate` looks for the api without --url or TASKYARD_URL. */
export const DEFAULT_API_URL = 'http://127.0.0.1:3000';

/** Largest scenario file read: the api takes bodies of at most 64 KiB anyway. */
const MAX_SCENARIO_BYTES = 64 * 1024;

export interface SimulateArgs {
  file: string;
  id: string | undefined;
  url: string;
  apiKey: string;
  follow: boolean;
  pollMs: number;
  out: (text: string) => void;
  err: (text: string) => void;
}

/**
 * `taskyard simulate`: start a simulation through the api with the typed client (its
 * Idempotency-Key and retries), then follow it until it ends and print its final view as
 * JSON on stdout (progress goes to stderr). Exit 0 when it succeeded, 1 otherwise.
 */
export async function simulate(a: SimulateArgs): Promise<number> {
  const scenario = await readScenario(a.file);
  if (typeof scenario === 'object' && scenario !== null && 'scenario' in scenario) {
    // The POST body of /v1/simulations, pasted whole: the file holds its `scenario` only.
    throw new Error(
      `${a.file} holds a "scenario" key: put only the scenario object in the file (arrival, service, servers, …), and the id in --id`,
    );
  }
  const id = a.id ?? `cli-${new Date().toISOString().slice(0, 10)}-${randomUUID().slice(0, 8)}`;
  const client = createClient({ baseUrl: a.url, apiKey: a.apiKey });
  let view: SimulationViewBody;
  try {
    view = await client.startSimulation(
      // Unchecked here on purpose: the client validates it and reports every problem.
      { simulation_id: id, scenario: scenario as SimulationScenarioInput },
    );
  } catch (err) {
    if (err instanceof ZodError) {
      throw new Error(
        `the scenario in ${a.file} is not valid: ${err.issues.map((i) => `${i.path.join('.') || '(scenario)'}: ${i.message}`).join('; ')}`,
      );
    }
    if (err instanceof TaskyardNetworkError) {
      throw new Error(`${err.message} (set --url or TASKYARD_URL; the default is ${DEFAULT_API_URL})`);
    }
    if (err instanceof TaskyardProblemError && err.slug === 'simulation-exists') {
      if (err.body.simulation === null) {
        throw new Error(
          `simulation id "${id}" belonged to a run that was pruned; ids are never reused, choose another --id`,
        );
      }
      throw new Error(`simulation "${id}" already exists with another scenario; choose another --id`);
    }
    throw err;
  }
  a.err(`simulation ${id}: ${view.status} (${a.url}/v1/simulations/${encodeURIComponent(id)})`);
  if (!a.follow) {
    a.out(JSON.stringify(view, null, 2));
    return 0;
  }
  let shown = '';
  while (view.status === 'queued' || view.status === 'running') {
    const line = `${view.status} ${(view.progress * 100).toFixed(0)}%`;
    if (line !== shown) a.err(`simulation ${id}: ${(shown = line)}`);
    await sleep(a.pollMs);
    view = await client.getSimulation(id);
  }
  a.err(`simulation ${id}: ${view.status}${view.error ? `: ${view.error}` : ''}`);
  a.out(JSON.stringify(view, null, 2));
  return view.status === 'succeeded' ? 0 : 1;
}

async function readScenario(file: string): Promise<unknown> {
  let text: string;
  try {
    const handle = await fsp.open(file, 'r');
    try {
      const { size } = await handle.stat();
      if (size > MAX_SCENARIO_BYTES) throw new Error(`${file} is larger than ${MAX_SCENARIO_BYTES} bytes`);
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`no scenario file ${file}`);
    throw err;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${file} is not JSON: ${(err as Error).message}`);
  }
}
