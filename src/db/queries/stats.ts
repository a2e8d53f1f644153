/**
 * @module The leader's periodic counts for the metrics: runs by status and queue, workers by
 * state. Takes a pool (it opens its own transaction for the timeout); the leader runs them every few seconds (src/scheduler/stats.ts),
 * never a scrape.
 */
import type { SqlPool } from '../client.ts'

/** The run statuses the queue depth counts: every unfinished one, and dead (the DLQ). */
export const DEPTH_STATUSES = ['waiting', 'queued', 'running', 'failed', 'dead'] as const

/** One cell of the queue depth. */
export interface QueueDepth {
  status: (typeof DEPTH_STATUSES)[number]
  /** The job's queue; null for the default one. */
  queue: string | null
  runs: number
}

/** One count of workers. */
export interface WorkerCount {
  state: 'active' | 'stopping' | 'stopped' | 'dead'
  workers: number
}

/**
 * Counts runs by status and queue, for the unfinished statuses and dead, and workers by state,
 * in one transaction bounded by `timeoutMs` (statement_timeout), so a slow database fails the
 * pass instead of piling passes up.
 *
 * Cost: only the runs counted are read, never the succeeded history. The unfinished statuses
 * come from runs_active_idx (its predicate is exactly them) and dead from runs_dead_idx, as a
 * BitmapOr of the two partial indexes, then a heap visit per row for its status and job; the
 * per-job counts are joined to jobs for their queue. So a pass costs about as much as the
 * queue is deep (plus the DLQ), whatever the history holds.
 */
export async function statsCount(
  sql: SqlPool,
  timeoutMs: number,
): Promise<{ depth: QueueDepth[]; workers: WorkerCount[] }> {
  return sql.begin(async (tx) => {
    await tx`SELECT set_config('statement_timeout', ${String(Math.ceil(timeoutMs))}, true)`
    const depth = await tx<QueueDepth[]>`
      SELECT c.status, j.queue, sum(c.n)::float8 AS runs
      FROM (
        SELECT r.job_id, r.status, count(*) AS n FROM pgsched.runs r
        WHERE r.status IN ('waiting', 'queued', 'running', 'failed') OR r.status = 'dead'
        GROUP BY r.job_id, r.status
      ) c JOIN pgsched.jobs j ON j.id = c.job_id
      GROUP BY c.status, j.queue`
    const workers = await tx<WorkerCount[]>`
      SELECT state, count(*)::float8 AS workers FROM pgsched.workers GROUP BY state`
    return { depth, workers }
  })
}
