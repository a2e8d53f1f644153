/**
 * @module The ticker: fires due schedule ticks. Leader-only, but safe to run twice at once: due
 * jobs are locked FOR UPDATE SKIP LOCKED, next_run_at only moves from the value that was planned,
 * and unique (job_id, scheduled_for) (per day partition of runs) stops a tick from creating a second run.
 */

import { planDueTick, planJob, type TickPlan } from '../core/cron.ts'
import { PgschedError } from '../core/errors.ts'
import { sleep } from '../core/sleep.ts'
import type { Logger } from '../core/types.ts'
import type { Sql, SqlPool } from '../db/client.ts'
import { jobFireTicks, jobListDue, jobNextDueInMs, jobPause } from '../db/queries/jobs.ts'
import { TickBatchTelemetry } from './tick-telemetry.ts'

/** Jobs planned per transaction; small enough to keep row locks brief. */
const TICK_BATCH_SIZE_DEFAULT = 500
/** Longest sleep between passes when nothing is due and no NOTIFY arrives (a safety net). */
const TICK_MAX_SLEEP_MS_DEFAULT = 30_000

/** Options of a Ticker. */
interface TickerOptions {
  sql: SqlPool
  logger: Logger
  /** @default TICK_BATCH_SIZE_DEFAULT */
  batchSize?: number
  /** @default TICK_MAX_SLEEP_MS_DEFAULT */
  maxSleepMs?: number
  /** Called after each pass of the loop (every due batch fired), with its error if it failed. */
  onPass?: (error?: unknown) => void
  /** Run last in each batch's transaction; throws (rolls the batch back) when no longer leading. */
  fence?: (tx: Sql) => Promise<void>
}

/**
 * Plans and fires one batch in one transaction; returns how many jobs it looked at. `now`
 * (default: the database's now()) is the time ticks are due by; `fence` runs last in it.
 */
export async function tickOnce(
  sql: SqlPool,
  logger: Logger,
  batchSize = TICK_BATCH_SIZE_DEFAULT,
  now?: Date,
  fence?: (tx: Sql) => Promise<void>,
): Promise<number> {
  return sql.begin(async (tx) => {
    const due = await jobListDue(tx, batchSize, now)
    const plans: TickPlan[] = []
    const telemetry = new TickBatchTelemetry()
    // Aligned with plans; stays undefined unless a tick has a span to store (tracing on).
    let traceparents: (string | null)[] | undefined
    // Due jobs of one batch share now(), so jobs with the same schedule share their plan:
    // cron maths once per schedule, not once per job (10,000 jobs due at once are common).
    const shared = new Map<string, Pick<TickPlan, 'tick' | 'next'>>()
    try {
      for (const job of due) {
        let plan: TickPlan
        try {
          if (job.next_run_at !== null) {
            const key = `${job.schedule}\u0000${job.timezone}`
            let found = shared.get(key)
            if (!found) {
              found = planDueTick(job.schedule, job.timezone, job.now)
              shared.set(key, found)
            }
            plan = { jobId: job.id, expected: job.next_run_at, ...found }
          } else plan = planJob(job)
        } catch (e) {
          if (!(e instanceof PgschedError)) throw e
          // Unplannable despite passing validate_cron: pause it rather than retry it forever.
          logger.error(
            { job_id: job.id, err: e },
            'scheduler: schedule cannot be planned; job paused',
          )
          await jobPause(tx, job.id)
          continue
        }
        const traceparent = telemetry.add(job, plan)
        if (traceparent !== null) traceparents ??= plans.map(() => null)
        traceparents?.push(traceparent)
        plans.push(plan)
      }
      const created = await jobFireTicks(tx, plans, traceparents)
      await fence?.(tx)
      if (created > 0) logger.debug({ created }, 'scheduler: ticks fired')
      await telemetry.fired(tx, created)
    } catch (e) {
      telemetry.end(e)
      throw e
    }
    return due.length
  })
}

/** Runs tick passes until stopped, sleeping until the next due tick or a NOTIFY. */
export class Ticker {
  readonly #o: TickerOptions & { batchSize: number; maxSleepMs: number }
  #running = false
  #abort = new AbortController()
  #wake = new AbortController()
  #loop: Promise<void> | undefined
  #unlisten: (() => Promise<void>) | undefined

  constructor(options: TickerOptions) {
    this.#o = {
      batchSize: TICK_BATCH_SIZE_DEFAULT,
      maxSleepMs: TICK_MAX_SLEEP_MS_DEFAULT,
      ...options,
    }
  }

  /** Starts the loop; idempotent. */
  async start(): Promise<void> {
    if (this.#running) return
    this.#running = true
    this.#abort = new AbortController()
    const sub = await this.#o.sql.listen('pgsched_scheduler', () => this.#wake.abort())
    this.#unlisten = () => sub.unlisten()
    this.#loop = this.#run()
  }

  /** Stops the loop and waits for the pass in progress; idempotent. */
  async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#abort.abort()
    this.#wake.abort()
    await this.#loop
    await this.#unlisten?.().catch(() => {})
  }

  /**
   * Fires everything due by `now` (default: the database's now()), batch after batch, whether
   * or not the loop runs; returns how many jobs it looked at.
   */
  runOnce(now?: Date): Promise<number> {
    // Unfenced: a pass asked for, leading or not (every tick write is safe to repeat).
    return this.#fireDue(now, () => true, undefined)
  }

  /** Fires batch after batch while batches come back full (more may be due) and `go()`. */
  async #fireDue(
    now: Date | undefined,
    go: () => boolean,
    fence: TickerOptions['fence'],
  ): Promise<number> {
    const { sql, logger, batchSize } = this.#o
    let seen = 0
    for (;;) {
      const n = await tickOnce(sql, logger, batchSize, now, fence)
      seen += n
      if (n < batchSize || !go()) return seen
    }
  }

  async #run(): Promise<void> {
    const { sql, logger, maxSleepMs } = this.#o
    while (this.#running) {
      let delay = maxSleepMs
      let error: unknown
      try {
        this.#wake = new AbortController()
        await this.#fireDue(undefined, () => this.#running, this.#o.fence)
        const due = await jobNextDueInMs(sql)
        if (due !== null) delay = Math.min(maxSleepMs, Math.ceil(due) + 1)
      } catch (e) {
        error = e
        if (this.#running) logger.error({ err: e }, 'scheduler: tick pass failed; retrying')
        delay = 1000
      }
      this.#o.onPass?.(error)
      if (!this.#running) break
      const both = AbortSignal.any([this.#abort.signal, this.#wake.signal])
      await sleep(delay, both)
    }
  }
}
