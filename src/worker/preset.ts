/** @module The Graphile Worker preset pgsched runs its executor with. */
import { WorkerPreset } from 'graphile-worker'

/** Settings of the executor. */
export interface ExecutorSettings {
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
    },
  }
}
