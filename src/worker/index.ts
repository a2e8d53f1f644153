/**
 * @module The worker role: a Graphile Worker runner whose one task, `pgsched_run`, executes an
 * attempt under pgsched's fences. pgsched, not Graphile Worker, owns retries: an attempt that
 * fails is re-enqueued by pgsched.run_finish as a new executor job.
 */
import { hostname } from 'node:os'

import { ExponentialBackoff, handleAll, retry } from 'cockatiel'
import { Logger as GraphileLogger, type Runner, run, type Task } from 'graphile-worker'

import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { runFinish, runStart } from '../db/queries/runs.ts'
import { withSpanFrom } from '../telemetry/tracing.ts'
import { executeAttempt } from './execute.ts'
import { makeWorkerPreset } from './preset.ts'
import type { TaskRegistry } from './tasks.ts'

/** Options of the worker role. */
export interface WorkerOptions {
  sql: SqlPool
  connectionString: string
  concurrency: number
  killGraceMs: number
  tasks: TaskRegistry
  logger: Logger
  /** How this worker is named on runs and attempts. @default host:pid:random */
  name?: string
  /** @see ExecutorSettings.pollIntervalMs */
  pollIntervalMs?: number
}

// Starting an attempt and recording its result survive a database blip of about half a minute.
// Both are safe to repeat after a lost answer: run_start returns the same attempt to the same
// worker, and run_finish is fenced on (run, attempt, worker).
const databaseRetryPolicy = retry(handleAll, {
  maxAttempts: 8,
  backoff: new ExponentialBackoff({ initialDelay: 250, maxDelay: 8000 }),
})

/** The payload of a `pgsched_run` executor job. */
interface RunPayload {
  run_id: number
  attempt: number
}

/** The worker role of one process. */
export class Worker {
  readonly name: string
  readonly #o: WorkerOptions
  readonly #active = new Map<number, { attempt: number; abort: AbortController }>()
  #runner: Runner | undefined
  #unlisten: (() => Promise<void>) | undefined

  constructor(o: WorkerOptions) {
    this.#o = o
    this.name = o.name ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`
  }

  /** Runs executing on this worker now, by run id. */
  get activeRuns(): number[] {
    return [...this.#active.keys()]
  }

  /** Starts listening for cancellations and executing runs; idempotent. */
  async start(): Promise<void> {
    if (this.#runner) return
    const sub = await this.#o.sql.listen('pgsched_cancel', (raw) => this.#onCancel(raw))
    this.#unlisten = () => sub.unlisten()
    this.#runner = await run({
      preset: makeWorkerPreset({
        connectionString: this.#o.connectionString,
        concurrency: this.#o.concurrency,
        pollIntervalMs: this.#o.pollIntervalMs,
      }),
      taskList: { pgsched_run: this.#task },
      noHandleSignals: true,
      logger: graphileLogger(this.#o.logger),
    })
  }

  /** Stops taking runs and waits for the running ones to finish; idempotent. */
  async stop(): Promise<void> {
    const runner = this.#runner
    this.#runner = undefined
    await runner?.stop()
    await this.#unlisten?.().catch(() => {})
    this.#unlisten = undefined
  }

  #onCancel(raw: string): void {
    try {
      const { run_id, attempt } = JSON.parse(raw) as RunPayload
      const active = this.#active.get(run_id)
      if (active && active.attempt === attempt) {
        this.#o.logger.info({ run_id, attempt }, 'worker: cancelling run')
        active.abort.abort()
      }
    } catch (e) {
      this.#o.logger.warn({ err: e }, 'worker: ignored a malformed cancel notification')
    }
  }

  readonly #task: Task = async (payload) => {
    const { run_id, attempt } = payload as RunPayload
    const { sql, logger } = this.#o
    const started = await databaseRetryPolicy.execute(() =>
      runStart(sql, run_id, attempt, this.name),
    )
    if (!started) {
      logger.debug({ run_id, attempt }, 'worker: attempt is no longer current; skipped')
      return
    }
    const abort = new AbortController()
    this.#active.set(run_id, { attempt, abort })
    const attrs = { 'pgsched.run_id': run_id, 'pgsched.attempt': attempt }
    await withSpanFrom('pgsched.worker.execute', started.traceparent, attrs, async () => {
      try {
        const result = await executeAttempt(started, {
          tasks: this.#o.tasks,
          killGraceMs: this.#o.killGraceMs,
          signal: abort.signal,
          logger,
        })
        const status = await databaseRetryPolicy.execute(() =>
          runFinish(sql, run_id, attempt, this.name, result),
        )
        logger.info(
          { run_id, attempt, outcome: result.outcome, status },
          'worker: attempt finished',
        )
      } finally {
        this.#active.delete(run_id)
      }
    })
  }
}

function graphileLogger(logger: Logger): GraphileLogger {
  return new GraphileLogger(() => (level, message, meta) => {
    const obj = { component: 'graphile-worker', ...(meta ?? {}) }
    if (level === 'error') logger.error(obj, message)
    else if (level === 'warning') logger.warn(obj, message)
    else logger.debug(obj, message)
  })
}
