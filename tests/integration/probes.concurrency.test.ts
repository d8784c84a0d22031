import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../shared/clock';
import { getProbeRun, insertProbeRun } from '../../shared/db/probe-runs-store';
import { insertProvider } from '../../shared/db/providers-store';
import { createLocks } from '../../shared/locks';
import { runProbeCycle } from '../../workers/processors/probes';
import { BACKENDS } from '../helpers/services';
import { startApi, type ApiUnderTest } from './api.harness';

/**
 * No probe waits on another's timeout beyond the concurrency limit: with PROBE_CONCURRENCY
 * at 1000, a cycle over 1,000 loopback providers, a third of them hanging, ends within the
 * timeout plus 1 s, and every provider gets its sample.
 */

const PROVIDERS = 1000;
const HANGING = 333;
// Small enough to keep the test quick, large enough that the 667 answering targets answer in
// time on a loaded 2-core machine (a 1,000-connection burst costs about 0.5 ms per connection).
const TIMEOUT_MS = 1_000;

/**
 * The targets run in a child process: a 1,000-connection burst answered by the same event
 * loop that probes would measure that loop, not the prober. `fast` answers every request at
 * once; `hang` accepts and never answers. The child exits when its stdin closes.
 */
const TARGETS_SCRIPT = `
const http = require('node:http');
const listen = (answer) => new Promise((resolve) => {
  const s = http.createServer((_req, res) => { if (answer) res.end('ok'); });
  // The default backlog (511) would drop SYNs of a 1,000-connection burst: a 1 s retransmit.
  s.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => resolve(s.address().port));
});
Promise.all([listen(true), listen(false)]).then(([fast, hang]) => {
  process.stdout.write(JSON.stringify({ fast, hang }) + '\\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

async function startTargets(): Promise<{ fast: number; hang: number; child: ChildProcess }> {
  const child = spawn(process.execPath, ['-e', TARGETS_SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] });
  const ports = await new Promise<{ fast: number; hang: number }>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(JSON.parse(out) as { fast: number; hang: number });
    });
    child.once('exit', (code) => reject(new Error(`target process exited with ${code}`)));
  });
  return { ...ports, child };
}

describe.each(BACKENDS)('a probe cycle over 1,000 providers ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let targets: { fast: number; hang: number; child: ChildProcess } | undefined;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('probes_many') });
    targets = await startTargets();
    const now = Date.now();
    await api.db.db.transaction().execute(async (trx) => {
      for (let i = 0; i < PROVIDERS; i++) {
        const port = i < HANGING ? targets!.hang : targets!.fast;
        await insertProvider(trx, {
          name: `p-${String(i).padStart(4, '0')}`,
          url: `http://127.0.0.1:${port}/health/${i}`,
          method: 'GET',
          expectedStatus: { min: 200, max: 299 },
          timeoutMs: TIMEOUT_MS,
          headers: null,
          enabled: true,
          now,
        });
      }
    });
  });
  afterAll(async () => {
    if (targets) {
      const exited = new Promise((resolve) => targets!.child.once('exit', resolve));
      targets.child.stdin!.end();
      await exited;
    }
    await api?.close();
  });

  it('a third of them hanging, it ends within the timeout plus 1 s with one sample each', async () => {
    const locks = createLocks({ redis: api.redis, prefix: api.prefix, logger: api.logger });
    const runId = crypto.randomUUID();
    await insertProbeRun(api.db.db, { id: runId, trigger: 'manual', now: Date.now() });
    const started = performance.now();
    const result = await runProbeCycle(
      {
        db: api.db,
        locks,
        clock: systemClock,
        config: { PROBE_CONCURRENCY: 1000, DOWN_AFTER: 3, RECOVER_AFTER: 2 },
      },
      { runId, trigger: 'manual', logger: api.logger },
    );
    const elapsed = performance.now() - started;
    expect(elapsed).toBeLessThan(TIMEOUT_MS + 1_000);
    expect(result).toEqual({ run_id: runId, outcome: 'succeeded', probed: PROVIDERS, failed: HANGING });

    const byClass = await api.db.db
      .selectFrom('probe_samples')
      .select(['error_class', (eb) => eb.fn.countAll().as('n')])
      .where('run_id', '=', runId)
      .groupBy('error_class')
      .execute();
    const counts = Object.fromEntries(byClass.map((r) => [String(r.error_class), Number(r.n)]));
    expect(counts).toEqual({ null: PROVIDERS - HANGING, timeout: HANGING });
    const states = await api.db.db
      .selectFrom('providers')
      .select(['state', (eb) => eb.fn.countAll().as('n')])
      .groupBy('state')
      .execute();
    expect(Object.fromEntries(states.map((r) => [r.state, Number(r.n)]))).toEqual({
      healthy: PROVIDERS - HANGING,
      degraded: HANGING,
    });
    expect(await getProbeRun(api.db.db, runId)).toMatchObject({
      status: 'succeeded',
      probed: PROVIDERS,
      failed: HANGING,
    });
  });
});
