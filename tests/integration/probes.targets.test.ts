import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../shared/clock';
import { insertProbeRun, getProbeRun } from '../../shared/db/probe-runs-store';
import {
  getProvider,
  insertProvider,
  listProviderTransitions,
  listRecentSamples,
  type ProviderConfig,
} from '../../shared/db/providers-store';
import { createLocks, type Locks } from '../../shared/locks';
import { runProbeCycle, type ProbeProcessorDeps } from '../../workers/processors/probes';
import { BACKENDS, startGate } from '../helpers/services';
import { startApi, type ApiUnderTest } from './api.harness';

/**
 * Probe cycles against real HTTP targets on loopback (127.0.0.1 only): a server inside the
 * test that answers, answers 500, answers slowly, hangs, resets, redirects, and a raw TCP
 * server that speaks no HTTP. Runs the cycle in-process under the real `probes` lock.
 */

interface Target {
  port: number;
  /** Requests seen, by path. */
  hits: Map<string, number>;
  /** What /flaky answers. */
  flaky: { ok: boolean };
  close(): Promise<void>;
}

async function startTarget(): Promise<Target> {
  const hits = new Map<string, number>();
  const flaky = { ok: true };
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    hits.set(path, (hits.get(path) ?? 0) + 1);
    switch (path) {
      case '/ok':
        res.end('ok');
        return;
      case '/500':
        res.statusCode = 500;
        res.end('boom');
        return;
      case '/slow': {
        // Answers, but long after the probe's deadline.
        const t = setTimeout(() => res.end('late'), 3_000);
        timers.add(t);
        return;
      }
      case '/hang':
        return;
      case '/reset':
        req.socket.destroy();
        return;
      case '/redirect':
        res.writeHead(302, { location: '/ok' });
        res.end();
        return;
      case '/flaky':
        res.statusCode = flaky.ok ? 200 : 503;
        res.end();
        return;
      default:
        res.statusCode = 404;
        res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    hits,
    flaky,
    async close() {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A TCP server that answers every connection with bytes that are not HTTP. */
async function startGarbageServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    s.end('SSH-2.0-OpenSSH_9.6\r\n\x00\x01garbage\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const config = (over: Partial<ProviderConfig> & { name: string; url: string }): ProviderConfig => ({
  expectedStatus: { min: 200, max: 299 },
  timeoutMs: 400,
  headers: null,
  enabled: true,
  ...over,
  method: over.method ?? 'GET',
});

describe.each(BACKENDS)('probe cycles against loopback targets ($backend)', ({ makeUrl }) => {
  let api: ApiUnderTest;
  let target: Target;
  let garbage: { port: number; close(): Promise<void> };
  let locks: Locks;
  let deps: ProbeProcessorDeps;

  beforeAll(async () => {
    api = await startApi({ databaseUrl: makeUrl('probes') });
    target = await startTarget();
    garbage = await startGarbageServer();
    locks = createLocks({ redis: api.redis, prefix: api.prefix, logger: api.logger });
    deps = {
      db: api.db,
      locks,
      clock: systemClock,
      config: { PROBE_CONCURRENCY: 16, DOWN_AFTER: 3, RECOVER_AFTER: 2 },
    };
  });
  afterAll(async () => {
    await target?.close();
    await garbage?.close();
    await api?.close();
  });

  const addProvider = async (over: Partial<ProviderConfig> & { name: string; url: string }) => {
    const r = await insertProvider(api.db.db, { ...config(over), now: Date.now() });
    if (r.outcome !== 'inserted') throw new Error(`provider ${over.name} not inserted`);
    return r.row;
  };
  const setEnabled = async (enabled: boolean, ids?: string[]) => {
    let q = api.db.db.updateTable('providers').set({ enabled: enabled ? 1 : 0 });
    if (ids) q = q.where('id', 'in', ids);
    await q.execute();
  };
  let runs = 0;
  const cycle = async () => {
    const id = crypto.randomUUID();
    await insertProbeRun(api.db.db, { id, trigger: 'manual', now: Date.now() });
    runs += 1;
    return runProbeCycle(deps, { runId: id, trigger: 'manual', logger: api.logger });
  };

  it('every kind of broken target gives one clean failed sample with its error class', async () => {
    const url = (path: string) => `http://127.0.0.1:${target.port}${path}`;
    const cases = [
      { name: 'ok', url: url('/ok'), want: { ok: true, status_code: 200, error_class: null } },
      {
        name: 'head',
        url: url('/ok'),
        method: 'HEAD' as const,
        want: { ok: true, status_code: 200, error_class: null },
      },
      {
        name: 'server-error',
        url: url('/500'),
        want: { ok: false, status_code: 500, error_class: 'bad_status' },
      },
      { name: 'slow', url: url('/slow'), want: { ok: false, status_code: null, error_class: 'timeout' } },
      { name: 'hang', url: url('/hang'), want: { ok: false, status_code: null, error_class: 'timeout' } },
      {
        name: 'reset',
        url: url('/reset'),
        want: { ok: false, status_code: null, error_class: 'connection_reset' },
      },
      {
        name: 'redirect',
        url: url('/redirect'),
        want: { ok: false, status_code: 302, error_class: 'bad_status' },
      },
      {
        name: 'non-http',
        url: `http://127.0.0.1:${garbage.port}/`,
        want: { ok: false, status_code: null, error_class: 'invalid_response' },
      },
      {
        name: 'refused',
        url: `http://127.0.0.1:${await closedPort()}/`,
        want: { ok: false, status_code: null, error_class: 'connection_refused' },
      },
    ];
    const rows = [];
    for (const c of cases) rows.push(await addProvider({ name: c.name, url: c.url, method: c.method }));
    const okHitsBefore = target.hits.get('/ok') ?? 0;

    const started = Date.now();
    const result = await cycle();
    // Concurrent: two 400 ms timeouts cost one deadline, not two.
    expect(Date.now() - started).toBeLessThan(400 + 1_000);
    expect(result).toMatchObject({ outcome: 'succeeded', probed: cases.length, failed: cases.length - 2 });

    for (const [i, c] of cases.entries()) {
      const samples = await listRecentSamples(api.db.db, rows[i]!.id, 50);
      expect(samples, c.name).toHaveLength(1);
      const s = samples[0]!;
      expect(
        { ok: Number(s.ok) === 1, status_code: s.status_code, error_class: s.error_class },
        c.name,
      ).toEqual(c.want);
      expect(s.run_id).toBe(result.run_id);
      if (c.want.error_class === 'timeout') {
        expect(Number(s.latency_ms)).toBeGreaterThanOrEqual(390);
        expect(Number(s.latency_ms)).toBeLessThan(1_000);
      }
    }
    // The redirect was not followed: /ok was asked only by the two providers that name it.
    expect(target.hits.get('/ok')).toBe(okHitsBefore + 2);
    const run = await getProbeRun(api.db.db, result.run_id);
    expect(run).toMatchObject({ status: 'succeeded', probed: cases.length, failed: cases.length - 2 });
    expect(Number(run!.fence)).toBeGreaterThan(0);
    await setEnabled(false);
  });

  it('a provider walks unknown → healthy → degraded → down → healthy, each transition stored and logged once', async () => {
    const p = await addProvider({ name: 'flaky', url: `http://127.0.0.1:${target.port}/flaky` });
    const sequence = [true, false, false, false, true, true, true];
    const states: string[] = [];
    for (const ok of sequence) {
      target.flaky.ok = ok;
      await cycle();
      states.push((await getProvider(api.db.db, p.id))!.state);
    }
    expect(states).toEqual(['healthy', 'degraded', 'degraded', 'down', 'down', 'healthy', 'healthy']);
    const transitions = await listProviderTransitions(api.db.db, p.id);
    expect(transitions.map((t) => `${t.from_state}→${t.to_state}`)).toEqual([
      'unknown→healthy',
      'healthy→degraded',
      'degraded→down',
      'down→healthy',
    ]);
    const row = (await getProvider(api.db.db, p.id))!;
    expect(Number(row.state_since)).toBe(Number(transitions.at(-1)!.at));
    expect(Number(row.consecutive_successes)).toBe(3);
    expect(Number(row.consecutive_failures)).toBe(0);

    const logged = api.logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'provider state changed' && l.provider_id === p.id);
    expect(logged.map((l) => `${String(l.from)}→${String(l.to)}`)).toEqual(
      transitions.map((t) => `${t.from_state}→${t.to_state}`),
    );
    expect(logged.every((l) => l.level === 30 && l.scope === 'probes' && typeof l.fence === 'number')).toBe(
      true,
    );
    expect((await listRecentSamples(api.db.db, p.id, 50)).length).toBe(sequence.length);
  });

  it('a cycle that finds the probes scope held is recorded skipped and probes nothing', async () => {
    const samples = async () =>
      Number(
        (
          await api.db.db
            .selectFrom('probe_samples')
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      );
    const before = await samples();
    const held = startGate();
    const release = startGate();
    const holder = locks.withSingleRunner('probes', async () => {
      held.open();
      await release.wait();
    });
    await held.wait();
    try {
      const manual = await cycle();
      expect(manual.outcome).toBe('skipped');
      expect(await getProbeRun(api.db.db, manual.run_id)).toMatchObject({
        status: 'skipped',
        trigger: 'manual',
      });

      const scheduledId = crypto.randomUUID();
      const scheduled = await runProbeCycle(deps, {
        runId: scheduledId,
        trigger: 'scheduled',
        logger: api.logger,
      });
      expect(scheduled.outcome).toBe('skipped');
      expect(await getProbeRun(api.db.db, scheduledId)).toMatchObject({
        status: 'skipped',
        trigger: 'scheduled',
        started_at: null,
      });
    } finally {
      release.open();
      await holder;
    }
    expect(await samples()).toBe(before);
    expect(runs).toBeGreaterThan(0);
  });
});
