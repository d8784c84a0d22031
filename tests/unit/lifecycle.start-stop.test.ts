import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { UnrestartableError } from '../../shared/errors';
import { createLifecycle, DrainTimeoutError, type LifecycleHooks } from '../../shared/lifecycle';
import { createLogger } from '../../shared/logger';
import { startGate, waitFor } from '../helpers/services';

/** A logger whose JSON lines are collected, to assert what was logged. */
function captureLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger({ level: 'debug' }, sink), lines };
}

/** Fake hooks that count calls; `drainGate` holds the drain until opened. */
function fakeHooks(
  opts: { drainGate?: { wait: () => Promise<void> }; startGate?: { wait: () => Promise<void> } } = {},
) {
  const calls = { start: 0, drain: 0, forceClose: 0 };
  const events: string[] = [];
  const hooks: LifecycleHooks = {
    name: 'fake',
    async start() {
      calls.start++;
      events.push('start');
      await opts.startGate?.wait();
    },
    async drain() {
      calls.drain++;
      events.push('drain');
      await opts.drainGate?.wait();
      events.push('drained');
    },
    async forceClose() {
      calls.forceClose++;
      events.push('forceClose');
    },
  };
  return { hooks, calls, events };
}

describe('lifecycle', () => {
  it('100 concurrent start() calls run the start hook once and share one promise', async () => {
    const gate = startGate();
    const { hooks, calls } = fakeHooks({ startGate: gate });
    const { logger } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, logger });
    const racers = startGate();
    const promises: Promise<void>[] = [];
    const all = Array.from({ length: 100 }, async () => {
      await racers.wait();
      promises.push(lc.start());
    });
    racers.open();
    await Promise.all(all);
    expect(lc.state).toBe('starting');
    gate.open();
    await Promise.all(promises);
    expect(new Set(promises).size).toBe(1);
    expect(calls.start).toBe(1);
    expect(lc.state).toBe('running');
    await lc.stop();
  });

  it('start() while running is a no-op', async () => {
    const { hooks, calls } = fakeHooks();
    const { logger } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, logger });
    await lc.start();
    await lc.start();
    await lc.start();
    expect(calls.start).toBe(1);
    await lc.stop();
  });

  it('stop() waits for the drain, and concurrent stop() calls share one drain', async () => {
    const drainGate = startGate();
    const { hooks, calls, events } = fakeHooks({ drainGate });
    const { logger } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 5_000, logger });
    await lc.start();
    let stopped = false;
    const stops = Array.from({ length: 10 }, () => lc.stop());
    void stops[0]!.then(() => (stopped = true));
    try {
      expect(new Set(stops).size).toBe(1);
      await waitFor(() => calls.drain === 1, { what: 'the drain hook to be called' });
      expect(lc.state).toBe('stopping');
      expect(stopped).toBe(false);
    } finally {
      drainGate.open();
    }
    await Promise.all(stops);
    expect(stopped).toBe(true);
    expect(lc.state).toBe('stopped');
    expect(calls.drain).toBe(1);
    expect(calls.forceClose).toBe(0);
    expect(events).toEqual(['start', 'drain', 'drained']);
  });

  it('stop() before start() resolves without touching the hooks', async () => {
    const { hooks, calls } = fakeHooks();
    const { logger } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, logger });
    await lc.stop();
    expect(calls).toEqual({ start: 0, drain: 0, forceClose: 0 });
    expect(lc.state).toBe('idle');
  });

  it('a cleanly stopped component can start again', async () => {
    const { hooks, calls } = fakeHooks();
    const { logger } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, logger });
    await lc.start();
    await lc.stop();
    await lc.start();
    expect(lc.state).toBe('running');
    expect(calls.start).toBe(2);
    await lc.stop();
  });

  it('a drain that outlives the timeout force-closes, rejects with DrainTimeoutError, and start() then throws UnrestartableError', async () => {
    const drainGate = startGate();
    const { hooks, calls, events } = fakeHooks({ drainGate });
    const { logger, lines } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, logger });
    const cleanups: string[] = [];
    await lc.start();
    lc.onCleanup(() => void cleanups.push('cleanup'));
    try {
      const stop = lc.stop();
      await expect(stop).rejects.toBeInstanceOf(DrainTimeoutError);
      await expect(stop).rejects.toThrow(/"fake" did not drain within 50 ms/);
      expect(lc.state).toBe('unrestartable');
      expect(calls.forceClose).toBe(1);
      expect(cleanups).toEqual(['cleanup']);
      expect(events).toEqual(['start', 'drain', 'forceClose']);
      await expect(lc.start()).rejects.toBeInstanceOf(UnrestartableError);
      // A repeated stop() reports the same outcome and does not force-close again.
      await expect(lc.stop()).rejects.toBeInstanceOf(DrainTimeoutError);
      expect(calls.forceClose).toBe(1);
      expect(calls.start).toBe(1);
      expect(lines.some((l) => l.to === 'unrestartable' && l.from === 'stopping')).toBe(true);
    } finally {
      drainGate.open();
    }
  });

  it('after a drain timeout, a force close and cleanups that never finish are abandoned after the grace, and stop() still rejects', async () => {
    const drainGate = startGate();
    const never = startGate();
    const { hooks } = fakeHooks({ drainGate });
    hooks.forceClose = () => never.wait();
    const { logger, lines } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, forceCloseGraceMs: 100, logger });
    await lc.start();
    lc.onCleanup(() => never.wait());
    try {
      const started = performance.now();
      const err = await lc.stop().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DrainTimeoutError);
      expect(performance.now() - started).toBeLessThan(5_000);
      expect(lc.state).toBe('unrestartable');
      expect(
        lines.some(
          (l) => l.msg === 'fake: force close and cleanups did not finish within 100 ms: leaving them',
        ),
      ).toBe(true);
    } finally {
      drainGate.open();
      never.open();
    }
  });

  it('cleanups run in reverse order of registration even when one throws, and the error is reported', async () => {
    const order: string[] = [];
    const boom = new Error('close failed');
    const { logger, lines } = captureLogger();
    const lc = createLifecycle(
      {
        name: 'fake',
        async start({ onCleanup }) {
          onCleanup(async () => void order.push('first'));
          onCleanup(async () => {
            order.push('second');
            throw boom;
          });
          onCleanup(async () => void order.push('third'));
        },
        async drain() {},
        async forceClose() {},
      },
      { drainTimeoutMs: 50, logger },
    );
    await lc.start();
    const err = await lc.stop().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(order).toEqual(['third', 'second', 'first']);
    expect(err).toBeInstanceOf(AggregateError);
    expect((err as AggregateError).errors).toEqual([boom]);
    expect(lc.state).toBe('stopped');
    expect(lines.filter((l) => l.msg === 'fake: cleanup failed')).toHaveLength(1);
  });

  it('a start hook that fails runs the cleanups it registered and leaves the component stopped', async () => {
    const order: string[] = [];
    const { logger } = captureLogger();
    const lc = createLifecycle(
      {
        name: 'fake',
        async start({ onCleanup }) {
          onCleanup(() => void order.push('opened'));
          throw new Error('redis unreachable');
        },
        async drain() {},
        async forceClose() {},
      },
      { drainTimeoutMs: 50, logger },
    );
    await expect(lc.start()).rejects.toThrow('redis unreachable');
    expect(order).toEqual(['opened']);
    expect(lc.state).toBe('stopped');
    await lc.stop();
  });

  it('logs each state transition once with component, from and to', async () => {
    const { hooks } = fakeHooks();
    const { logger, lines } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, logger });
    await Promise.all([lc.start(), lc.start()]);
    await Promise.all([lc.stop(), lc.stop()]);
    const transitions = lines
      .filter((l) => l.component === 'fake' && 'to' in l)
      .map((l) => `${String(l.from)}->${String(l.to)}`);
    expect(transitions).toEqual([
      'idle->starting',
      'starting->running',
      'running->stopping',
      'stopping->stopped',
    ]);
    expect(lines.filter((l) => 'to' in l).every((l) => l.level === 30)).toBe(true);
  });

  it('a stop() requested during start() runs after the start completes', async () => {
    const gate = startGate();
    const { hooks, events } = fakeHooks({ startGate: gate });
    const { logger } = captureLogger();
    const lc = createLifecycle(hooks, { drainTimeoutMs: 50, logger });
    const start = lc.start();
    const stop = lc.stop();
    gate.open();
    await start;
    await stop;
    expect(events).toEqual(['start', 'drain', 'drained']);
    expect(lc.state).toBe('stopped');
  });
});
