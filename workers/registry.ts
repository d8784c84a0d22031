import type { Job } from 'bullmq';
import { UnknownJobError } from '../shared/errors';
import type { Logger } from '../shared/logger';

/** What a processor gets besides its job. */
export interface JobContext {
  /**
   * Aborts when the job must stop because the worker force-closes after the drain timeout.
   * Long work checks it; work under a single-runner lock passes it to the lock, whose own
   * signal also aborts when the lock is lost. Made on first read.
   */
  readonly signal: AbortSignal;
  /** The worker's lock token for this job, for BullMQ calls that need it (moveToDelayed). */
  readonly token: string | undefined;
  /** Child logger carrying `queue`, `job_id` and `job_name`; created on first use. */
  readonly logger: Logger;
}

/**
 * Runs one job. `job.data` is the payload as parsed by the queue's zod schema (defaults
 * applied); an invalid payload never reaches the processor.
 */
export type JobProcessor<D = any, R = unknown> = (job: Job<D>, ctx: JobContext) => Promise<R>;

/** Processors by queue name, then by job name. Immutable. */
export type ProcessorRegistry = ReadonlyMap<string, ReadonlyMap<string, JobProcessor>>;

/** A Map that refuses changes once built, so a registry cannot be altered after start. */
class FrozenMap<K, V> extends Map<K, V> {
  private readonly sealed: boolean;
  constructor(entries: Iterable<readonly [K, V]>) {
    super(entries);
    this.sealed = true;
    Object.freeze(this);
  }
  override set(key: K, value: V): this {
    // Map's constructor calls set() before `sealed` is assigned.
    if (this.sealed) throw new TypeError('a processor registry is immutable');
    return super.set(key, value);
  }
  override delete(): boolean {
    throw new TypeError('a processor registry is immutable');
  }
  override clear(): void {
    throw new TypeError('a processor registry is immutable');
  }
}

/**
 * Build an immutable registry from `{ [queue]: { [jobName]: processor } }`.
 * @throws TypeError when an entry is not a function.
 */
export function buildRegistry(entries: Record<string, Record<string, JobProcessor>>): ProcessorRegistry {
  return new FrozenMap(
    Object.entries(entries).map(([queue, jobs]) => {
      for (const [jobName, fn] of Object.entries(jobs)) {
        if (typeof fn !== 'function')
          throw new TypeError(`processor for ${queue}/${jobName} is not a function`);
      }
      return [queue, new FrozenMap(Object.entries(jobs))] as const;
    }),
  );
}

/**
 * The processor for a job name on a queue's processor map.
 * @throws UnknownJobError listing the job names the map knows.
 */
export function processorFor(
  queue: string,
  processors: ReadonlyMap<string, JobProcessor>,
  jobName: string,
): JobProcessor {
  const fn = processors.get(jobName);
  if (fn === undefined) throw new UnknownJobError(queue, jobName, [...processors.keys()]);
  return fn;
}
