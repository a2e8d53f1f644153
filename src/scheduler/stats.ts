/**
 * @module The stats collector: the leader counts runs by status and queue and workers by state
 * (src/db/queries/stats.ts) every interval and keeps the counts in memory, where the
 * `pgsched.queue.depth` and `pgsched.workers` gauges read them at scrape time. Only the leader
 * reports them (a former leader reads 0, see leader-gauges.ts), so summing a gauge over every
 * scheduler process counts each run once.
 */
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import {
  DEPTH_STATUSES,
  type QueueDepth,
  statsCount,
  type WorkerCount,
} from '../db/queries/stats.ts'
import type { Observation } from '../telemetry/metrics.ts'
import { destination } from '../telemetry/tracing.ts'
import { observeLeaderState } from './leader-gauges.ts'
import { Periodic } from './periodic.ts'

/** How often the leader counts, by default: a quarter of Prometheus' default minute of scrapes. */
export const STATS_INTERVAL_MS_DEFAULT = 15_000

/** The worker states reported, with 0 when none is in a state, so ratios over them exist. */
const WORKER_STATES = ['active', 'stopping', 'stopped', 'dead'] as const

/** Options of the stats collector. */
interface StatsOptions {
  sql: SqlPool
  logger: Logger
  /** @default STATS_INTERVAL_MS_DEFAULT */
  intervalMs?: number
  /** Called after each pass, with its error if it failed. */
  onPass?: (error?: unknown) => void
}

/** Counts the queue and the workers every interval while this process leads. */
export class StatsCollector {
  readonly #loop: Periodic
  readonly #intervalMs: number
  #counts: { depth: QueueDepth[]; workers: WorkerCount[] } | undefined
  #leading = false
  #observed = false

  constructor(o: StatsOptions) {
    this.#intervalMs = o.intervalMs ?? STATS_INTERVAL_MS_DEFAULT
    this.#loop = new Periodic({
      intervalMs: this.#intervalMs,
      pass: async () => {
        // A pass longer than the interval is abandoned: the next one counts afresh.
        this.#counts = await statsCount(o.sql, this.#intervalMs)
      },
      onError: (e) => o.logger.warn({ err: e }, 'scheduler: counting runs and workers failed'),
      onPass: o.onPass,
    })
  }

  /** Starts counting and reporting; idempotent. */
  async start(): Promise<void> {
    if (!this.#observed) {
      this.#observed = true
      // Registered for good: see leader-gauges.ts for why they are not removed on stop.
      const whileLeading =
        <T>(read: () => T) =>
        () =>
          this.#leading ? read() : undefined
      observeLeaderState(
        'pgsched.queue.depth',
        whileLeading(() => depthReadings(this.#counts?.depth)),
      )
      observeLeaderState(
        'pgsched.workers',
        whileLeading(() => workerReadings(this.#counts?.workers)),
      )
    }
    if (!this.#leading) {
      // Counts made while not leading (runOnce) are not this leadership's.
      this.#counts = undefined
      this.#leading = true
    }
    await this.#loop.start()
  }

  /** Stops and waits for the pass in progress; the gauges read 0 from then on; idempotent. */
  async stop(): Promise<void> {
    await this.#loop.stop()
    this.#leading = false
    this.#counts = undefined
  }

  /** Counts once now, after the pass in progress if any; rejects with its error. */
  runOnce(): Promise<void> {
    return this.#loop.runOnce()
  }
}

/** Every queue seen, with each counted status (0 when it has none); nothing before a count. */
function depthReadings(depth: QueueDepth[] | undefined): Observation[] {
  if (!depth) return []
  const byQueue = new Map<string, Map<string, number>>([['default', new Map()]])
  for (const d of depth) {
    const queue = destination(d.queue)
    const counts = byQueue.get(queue) ?? new Map<string, number>()
    byQueue.set(queue, counts)
    counts.set(d.status, (counts.get(d.status) ?? 0) + d.runs)
  }
  const out: Observation[] = []
  for (const [queue, counts] of byQueue) {
    for (const status of DEPTH_STATUSES) out.push([counts.get(status) ?? 0, { status, queue }])
  }
  return out
}

function workerReadings(workers: WorkerCount[] | undefined): Observation[] {
  if (!workers) return []
  return WORKER_STATES.map((state) => [
    workers.find((w) => w.state === state)?.workers ?? 0,
    { state },
  ])
}
