/** @module The Graphile Worker preset pgsched runs its executor with. */
import { WorkerPreset } from 'graphile-worker'

/**
 * Claims up to `count` executor jobs for pool `poolId`, skipping jobs with a flag in
 * `flagsToSkip`, and returns Graphile Worker's rows for them. The patched local queue
 * (patches/README.md, change 4) calls it instead of Graphile's own batch claim.
 */
export type ClaimJobs = (
  count: number,
  flagsToSkip: string[] | null,
  poolId: string,
) => Promise<Record<string, unknown>[]>

declare global {
  namespace GraphileConfig {
    interface WorkerOptions {
      /** pgsched's claim, read by the patched local queue. */
      pgschedClaimJobs?: ClaimJobs
    }
  }
}

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
  /** How the local queue claims; Graphile's batch claim when absent. */
  claimJobs?: ClaimJobs
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
      // of one per run. patches/graphile-worker+*.patch makes the local queue claim only for
      // slots that are free (batched when several are, up to two claims in flight), so no run
      // is held behind busy slots while a more urgent one is submitted (strict priority), and
      // honour the degradation's forbidden flags; `claimJobs` starts the claimed runs in the
      // claim's own round trip.
      localQueue: { size: s.concurrency },
      ...(s.claimJobs ? { pgschedClaimJobs: s.claimJobs } : {}),
      // 0 batches the completions that arrive before a 0 ms timer fires, without holding runs
      // locked for longer (Graphile's default, -1, turns batching off).
      completeJobBatchDelay: 0,
    },
  }
}
