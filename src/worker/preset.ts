/** @module The Graphile Worker preset pgsched runs its executor with. */
import { WorkerPreset } from 'graphile-worker'

/** Settings of the executor. */
interface ExecutorSettings {
  connectionString: string
  concurrency: number
  /** Fallback poll for runs that became due (retries, delayed runs); LISTEN wakes it otherwise. @default 2000 */
  pollIntervalMs?: number
  /**
   * How long Graphile Worker waits for running tasks on shutdown before it aborts them. pgsched
   * hands runs back itself before this, so it only has to outlast that. @default 5000
   */
  shutdownTimeoutMs?: number
}

/** Builds the preset: Graphile's defaults, our connection and concurrency. */
export function makeWorkerPreset(s: ExecutorSettings): GraphileConfig.Preset {
  return {
    extends: [WorkerPreset],
    worker: {
      connectionString: s.connectionString,
      concurrentJobs: s.concurrency,
      // One connection per concurrent job plus headroom for LISTEN and housekeeping.
      maxPoolSize: s.concurrency + 2,
      pollInterval: s.pollIntervalMs ?? 2000,
      gracefulShutdownAbortTimeout: s.shutdownTimeoutMs ?? 5000,
      // Claim runs in batches and complete them in batches: one statement for a batch instead
      // of one per run (patches/graphile-worker+*.patch makes the batch claim honour the
      // degradation's forbidden flags). A worker holds at most `concurrency` runs it has not
      // started yet; a run of higher priority submitted meanwhile waits for those.
      localQueue: { size: s.concurrency },
      // 0 batches the completions that arrive before a 0 ms timer fires, without holding runs
      // locked for longer (Graphile's default, -1, turns batching off).
      completeJobBatchDelay: 0,
    },
  }
}
