import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config';
import { ConfigError } from '../../shared/errors';

/** Retention settings that are each valid but would leave references to pruned runs. */
describe('run retention against what points at runs', () => {
  const problemsOf = (env: Record<string, string>): string[] => {
    try {
      loadConfig(env);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    return [];
  };

  it('the defaults pass, and so does a run retention equal to what it must outlive', () => {
    expect(problemsOf({})).toEqual([]);
    expect(loadConfig({}).RUN_RETENTION_DAYS).toBe(30);
    expect(
      problemsOf({ RUN_RETENTION_DAYS: '2', PROBE_SAMPLE_RETENTION_DAYS: '2', IDEMPOTENCY_TTL_HOURS: '48' }),
    ).toEqual([]);
  });

  it('unset, it grows to cover what points at runs, so a setup valid before it existed still is', () => {
    expect(loadConfig({ PROBE_SAMPLE_RETENTION_DAYS: '90' }).RUN_RETENTION_DAYS).toBe(90);
    expect(
      loadConfig({ PROBE_SAMPLE_RETENTION_DAYS: '1', IDEMPOTENCY_TTL_HOURS: '720' }).RUN_RETENTION_DAYS,
    ).toBe(30);
    expect(loadConfig({ PROBE_SAMPLE_RETENTION_DAYS: '1' }).RUN_RETENTION_DAYS).toBe(30);
  });

  it('runs kept for less time than probe samples are refused, naming both settings', () => {
    expect(problemsOf({ RUN_RETENTION_DAYS: '5', PROBE_SAMPLE_RETENTION_DAYS: '7' })).toEqual([
      'RUN_RETENTION_DAYS=5: must be at least PROBE_SAMPLE_RETENTION_DAYS (7), or kept samples would name runs already pruned',
    ]);
  });

  it('runs kept for less time than idempotent replays are refused (hours rounded up to days)', () => {
    expect(
      problemsOf({ RUN_RETENTION_DAYS: '1', PROBE_SAMPLE_RETENTION_DAYS: '1', IDEMPOTENCY_TTL_HOURS: '25' }),
    ).toEqual([
      'RUN_RETENTION_DAYS=1: must be at least 2 (IDEMPOTENCY_TTL_HOURS=25 in days, rounded up), or a replayed answer would point at a run already pruned',
    ]);
  });
});
