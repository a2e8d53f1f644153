/**
 * @module The worker role: a Graphile Worker runner whose one task, `pgsched_run`, executes an
 * attempt under pgsched's fences. pgsched, not Graphile Worker, owns retries: an attempt that
 * fails is re-enqueued by pgsched.run_finish as a new executor job.
 */
import { EventEmitter } from 'node:events'
import { hostname } from 'node:os'

import { type Context, context } from '@opentelemetry/api'
import { ExponentialBackoff, handleAll, retry } from 'cockatiel'
import {
  Logger as GraphileLogger,
  type Runner,
  run,
  type Task,
  type WorkerEvents,
} from 'graphile-worker'

import {
  HEARTBEAT_INTERVAL_SECONDS_DEFAULT,
  JOB_LIMITS_DEFAULT,
  SANDBOX_DEFAULT,
  SHUTDOWN_GRACE_SECONDS_DEFAULT,
} from '../core/config.ts'
import { sleep } from '../core/sleep.ts'
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { GroupCommit } from '../db/group-commit.ts'
import { degradationGet } from '../db/queries/degradation.ts'
import {
  type AttemptRef,
  type AttemptResult,
  runClaimMany,
  runFinishMany,
  runStartMany,
  type StartedRun,
} from '../db/queries/runs.ts'
import { workerHeartbeat, workerSetSandbox } from '../db/queries/workers.ts'
import { observe } from '../telemetry/metrics.ts'
import type { TraceLinkMode } from '../telemetry/tracing.ts'
import { executeAttempt, type StopReason } from './execute.ts'
import { makeWorkerPreset } from './preset.ts'
import { prepareSandbox, type Sandbox, type SandboxSettings } from './sandbox.ts'
import type { TaskRegistry } from './tasks.ts'
import {
  claimSpan,
  processSpan,
  recordAttempt,
  recordQueueWait,
  recordRunStatus,
  settleSpan,
} from './telemetry.ts'

/** Options of the worker role. */
export interface WorkerOptions {
  sql: SqlPool
  connectionString: string
  concurrency: number
  killGraceMs: number
  tasks: TaskRegistry
  logger: Logger
  /**
   * How command jobs are isolated and limited.
   * @default bwrap with JOB_LIMITS_DEFAULT
   */
  sandbox?: SandboxSettings
  /** How this worker is named on runs and attempts. @default host:pid:random */
  name?: string
  /** @see ExecutorSettings.pollIntervalMs */
  pollIntervalMs?: number
  /** @default HEARTBEAT_INTERVAL_SECONDS_DEFAULT s */
  heartbeatIntervalMs?: number
  /** How long stop() lets running runs finish before handing them back. @default SHUTDOWN_GRACE_SECONDS_DEFAULT s */
  shutdownGraceMs?: number
  /**
   * Whether an attempt's `process` span is a child of the span that submitted its run (`parent`)
   * or the root of its own trace with a link to it (`link`); see TraceLinkMode.
   * @default 'link'
   */
  traceLinkMode?: TraceLinkMode
  /**
   * Called if the executor stops without stop() (Graphile Worker shuts its pool down after its
   * retries give up, e.g. a database away for minutes). The process should exit: heartbeats would
   * otherwise go on while nothing runs; once they stop, the leader rescues this worker's runs.
   */
  onExecutorLost?: (error: unknown) => void
  /**
   * Called each time the executor has fetched runs from the database, with how many it claimed
   * (0: nothing it may take was due): a signal to wait on instead of time.
   */
  onPoll?: (claimed: number) => void
}

// Starting an attempt and recording its result survive a database blip of about half a minute.
// Both are safe to repeat after a lost answer: run_start returns the same attempt to the same
// worker, and run_finish is fenced on (run, attempt, worker). A result still unwritten after that
// is kept and written after the next heartbeat that reaches the database.
const databaseRetryPolicy = retry(handleAll, {
  maxAttempts: 8,
  backoff: new ExponentialBackoff({ initialDelay: 250, maxDelay: 8000 }),
})

/** The executor flag of runs with priority 8-10 (pgsched._enqueue_attempt sets it). */
const LOW_PRIORITY_FLAG = 'low'

/** The payload of a `pgsched_run` executor job. */
type RunPayload = AttemptRef

/** A run this worker executes now. */
interface ActiveRun {
  attempt: number
  abort: AbortController
}

/**
 * What pgsched's claim (`#claimJobs`) adds to Graphile Worker's job: the run it started in the
 * same round trip (undefined: no longer current) and when the claim began.
 */
interface ClaimedRun {
  started: StartedRun | undefined
  claimStart: Date
}
const CLAIMED = Symbol('pgsched claimed run')
type ClaimedJobRow = Record<string, unknown> & { [CLAIMED]?: ClaimedRun }

/** A result to write: the attempt's run, and the span context its write is traced under. */
interface Settlement {
  run: StartedRun
  result: AttemptResult
  span: Context
}

/** The worker role of one process. */
export class Worker {
  readonly name: string
  readonly #o: WorkerOptions
  readonly #active = new Map<number, ActiveRun>()
  readonly #unreported = new Map<number, Settlement>()
  readonly #executorIds = new Set<string>()
  // Results being written in the background; stop() waits for them.
  readonly #recording = new Set<Promise<void>>()
  #runner: Runner | undefined
  #sandbox: Sandbox | undefined
  #unlisten: (() => Promise<void>) | undefined
  #state: 'active' | 'stopping' = 'active'
  #beats = new AbortController()
  #beatLoop: Promise<void> | undefined
  // Executor slots in use: tasks between their claim and the end of their execution.
  #busy = 0
  #unobserve: (() => void)[] = []
  // Starting attempts and recording results of concurrent runs share transactions.
  readonly #starts: GroupCommit<RunPayload, StartedRun | undefined>
  readonly #finishes: GroupCommit<{ run: RunPayload; result: AttemptResult }, string | null>
  // The degradation level as of the last heartbeat: from 1 on, priorities 8-10 are not taken.
  #degradation = 0

  constructor(o: WorkerOptions) {
    this.#o = o
    this.name = o.name ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`
    const groups = { maxBatch: 50, maxInFlight: 2 }
    this.#starts = new GroupCommit(
      o.sql,
      (sql, runs) => claimSpan(() => runStartMany(sql, runs, this.name)),
      groups,
    )
    this.#finishes = new GroupCommit(
      o.sql,
      (sql, results) => runFinishMany(sql, results, this.name),
      groups,
    )
  }

  /** Runs executing on this worker now, by run id. */
  get activeRuns(): number[] {
    return [...this.#active.keys()]
  }

  /** Registers, starts heartbeating, listens for cancellations and executes runs; idempotent. */
  async start(): Promise<void> {
    if (this.#runner) return
    this.#state = 'active'
    const sandbox = await prepareSandbox(
      this.#o.sandbox ?? { mode: SANDBOX_DEFAULT, defaults: { ...JOB_LIMITS_DEFAULT } },
      this.#o.logger,
    )
    // An unavailable sandbox has logged why; this worker then fails command jobs with that reason.
    this.#sandbox = sandbox
    await this.#beat()
    // Before the first claim: each command attempt records the sandbox it ran in.
    await workerSetSandbox(this.#o.sql, this.name, sandbox.describe())
    const sub = await this.#o.sql.listen('pgsched_cancel', (raw) => this.#onCancel(raw))
    this.#unlisten = () => sub.unlisten()
    const events: WorkerEvents = new EventEmitter()
    // Graphile Worker locks jobs and queues in the name of the pool, not of its workers.
    events.on('pool:create', ({ workerPool }) => this.#executorIds.add(workerPool.id))
    // Jobs the local queue gives back unstarted (claimed as it was released): their runs started
    // with the claim, so they are handed back at once, as a shutdown does, using no retry.
    events.on('localQueue:returnJobs', ({ jobs }) => {
      for (const job of jobs as unknown as ClaimedJobRow[]) {
        const run = job[CLAIMED]?.started
        if (!run) continue
        this.#record({
          run,
          result: {
            outcome: 'interrupted',
            exitCode: null,
            output: null,
            error: 'claimed as the worker stopped; handed back unstarted',
          },
          span: context.active(),
        })
      }
    })
    // The preset's local queue does every fetch from the database (makeWorkerPreset).
    const onPoll = this.#o.onPoll
    if (onPoll) events.on('localQueue:getJobs:complete', ({ jobs }) => onPoll(jobs.length))
    this.#runner = await run({
      preset: makeWorkerPreset({
        connectionString: this.#o.connectionString,
        concurrency: this.#o.concurrency,
        pollIntervalMs: this.#o.pollIntervalMs,
        shutdownTimeoutMs: this.#shutdownGraceMs + this.#o.killGraceMs + 15_000,
        claimJobs: this.#claimJobs,
      }),
      taskList: { pgsched_run: this.#task },
      noHandleSignals: true,
      logger: graphileLogger(this.#o.logger),
      events,
      forbiddenFlags: () => (this.#degradation >= 1 ? [LOW_PRIORITY_FLAG] : null),
    })
    const runner = this.#runner
    void runner.promise.then(
      () => this.#executorEnded(runner, undefined),
      (e: unknown) => this.#executorEnded(runner, e),
    )
    this.#beats = new AbortController()
    this.#beatLoop = this.#heartbeats(this.#beats.signal)
    const worker = { worker: this.name }
    this.#unobserve = [
      observe('pgsched.worker.slots.busy', () => [[this.#busy, worker]]),
      observe('pgsched.worker.slots.total', () => [[this.#o.concurrency, worker]]),
    ]
  }

  #executorEnded(runner: Runner, error: unknown): void {
    if (this.#runner !== runner) return // stop() ended it
    this.#o.logger.error(
      { err: error, worker: this.name },
      'worker: the executor stopped unexpectedly',
    )
    this.#o.onExecutorLost?.(error)
  }

  /**
   * Stops gracefully: takes no new runs, lets running ones finish for the shutdown grace, then
   * stops them and hands them back for an immediate retry elsewhere; idempotent.
   */
  async stop(): Promise<void> {
    const runner = this.#runner
    if (!runner) return
    this.#runner = undefined
    this.#state = 'stopping'
    await this.#beat()
    const handBack = setTimeout(() => {
      if (this.#active.size === 0) return
      this.#o.logger.info(
        { runs: this.activeRuns },
        'worker: shutdown grace is over; handing running runs back',
      )
      for (const run of this.#active.values()) run.abort.abort('shutdown' satisfies StopReason)
    }, this.#shutdownGraceMs)
    try {
      await runner.stop()
      await Promise.all(this.#recording)
    } finally {
      await this.#sandbox?.stop()
      clearTimeout(handBack)
      this.#beats.abort()
      await this.#beatLoop
      await this.#unlisten?.().catch(() => {})
      this.#unlisten = undefined
      for (const unobserve of this.#unobserve) unobserve()
      this.#unobserve = []
      // Anything still unwritten is rescued by the leader: a stopped worker holds nothing.
      await this.#beat('stopped')
    }
  }

  get #shutdownGraceMs(): number {
    return this.#o.shutdownGraceMs ?? SHUTDOWN_GRACE_SECONDS_DEFAULT * 1000
  }

  async #heartbeats(signal: AbortSignal): Promise<void> {
    const interval = this.#o.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_SECONDS_DEFAULT * 1000
    while (!signal.aborted) {
      await this.#beat()
      await sleep(interval, signal)
    }
  }

  /** One heartbeat; then writes results a database outage kept back. Never throws. */
  async #beat(state: 'active' | 'stopping' | 'stopped' = this.#state): Promise<void> {
    const { sql, logger } = this.#o
    const held = [...this.#active.values()]
    try {
      const before = await workerHeartbeat(sql, {
        name: this.name,
        host: hostname(),
        pid: process.pid,
        concurrency: this.#o.concurrency,
        runs: [...new Set([...this.#active.keys(), ...this.#unreported.keys()])],
        executorIds: [...this.#executorIds],
        state,
      })
      const level = (await degradationGet(sql)).level
      if (level !== this.#degradation) {
        logger.info({ level }, 'worker: degradation level changed')
        this.#degradation = level
      }
      if (before === 'dead') {
        logger.warn(
          { worker: this.name, runs: held.length },
          'worker: the leader declared this worker dead while it was unresponsive; its runs were retried elsewhere, so it stops them and rejoins',
        )
        for (const run of held) run.abort.abort('superseded' satisfies StopReason)
      }
    } catch (e) {
      logger.warn({ err: e, worker: this.name }, 'worker: heartbeat failed')
      return
    }
    for (const [runId, settlement] of this.#unreported) {
      try {
        await this.#settle(settlement, () => this.#finish(settlement))
        this.#unreported.delete(runId)
      } catch {
        return
      }
    }
  }

  #onCancel(raw: string): void {
    try {
      const { run_id, attempt } = JSON.parse(raw) as RunPayload
      const active = this.#active.get(run_id)
      if (active && active.attempt === attempt) {
        this.#o.logger.info({ run_id, attempt }, 'worker: cancelling run')
        active.abort.abort('cancelled' satisfies StopReason)
      }
    } catch (e) {
      this.#o.logger.warn({ err: e }, 'worker: ignored a malformed cancel notification')
    }
  }

  /**
   * Claims `count` executor jobs and starts their runs in one statement (pgsched.run_claim_many),
   * in a `receive` span as the group commit of starts has; the local queue hands them to workers
   * waiting for one. A run is running before its task registers it in #active; a heartbeat in
   * between misses it once, which the rescuer forgives (it waits a heartbeat timeout).
   */
  readonly #claimJobs = async (
    count: number,
    flagsToSkip: string[] | null,
    poolId: string,
  ): Promise<ClaimedJobRow[]> => {
    const claimStart = new Date()
    let claimed: Awaited<ReturnType<typeof runClaimMany>> = []
    await claimSpan(async () => {
      claimed = await runClaimMany(this.#o.sql, poolId, count, flagsToSkip, this.name)
      return claimed.map((c) => c.started)
    })
    return claimed.map(({ job, started }) =>
      Object.assign(job, { [CLAIMED]: { started, claimStart } }),
    )
  }

  readonly #task: Task = async (payload, helpers) => {
    const { run_id, attempt } = payload as RunPayload
    const claimed = (helpers.job as unknown as ClaimedJobRow)[CLAIMED]
    const { logger } = this.#o
    const abort = new AbortController()
    // Held before run_start commits, so that every heartbeat after that commit reports the run,
    // and until its result is written.
    this.#active.set(run_id, { attempt, abort })
    this.#busy++
    let recording = false
    try {
      const claimStart = claimed?.claimStart ?? new Date()
      // Claimed by #claimJobs, the run was started with its claim; otherwise start it now.
      const started = claimed
        ? claimed.started
        : await databaseRetryPolicy.execute(() => this.#starts.run({ run_id, attempt }))
      if (!started) {
        logger.debug({ run_id, attempt }, 'worker: attempt is no longer current; skipped')
        return
      }
      recordQueueWait(started)
      const sandbox = started.kind === 'command' ? this.#sandbox!.describe() : undefined
      const ran = performance.now()
      const end = await processSpan(
        started,
        { mode: this.#o.traceLinkMode ?? 'link', claimStart },
        async () => {
          const result = await executeAttempt(started, {
            tasks: this.#o.tasks,
            sandbox: this.#sandbox!,
            killGraceMs: this.#o.killGraceMs,
            signal: abort.signal,
            logger,
          })
          // The run was rescued from this worker: the leader recorded this attempt as lost.
          const outcome = abort.signal.reason === 'superseded' ? 'lost' : result.outcome
          return { result, outcome, sandbox }
        },
      )
      // The rescued run's newer attempt owns the result; the leader counted this one.
      if (abort.signal.reason === 'superseded') return
      recordAttempt(started, end.outcome, (performance.now() - ran) / 1000)
      // Outside a lane the executor's slot is freed now, so the next run starts while this
      // result commits; the run stays held (heartbeats report it) until the result is written.
      recording = true
      const written = this.#record({ run: started, result: end.result, span: end.context })
      // A lane's next run is claimed once this executor job completes, and starts with its
      // claim: its start must not come before this result in the lane's history.
      if (started.queue !== null) await written
    } finally {
      this.#busy--
      if (!recording) this.#active.delete(run_id)
    }
  }

  /**
   * Writes a result in the background: retried, else kept for after the next heartbeat. Settles
   * once written or kept; never rejects.
   */
  #record(s: Settlement): Promise<void> {
    const { run_id: runId, attempt } = s.run
    const written = (async () => {
      try {
        await this.#settle(s, () => databaseRetryPolicy.execute(() => this.#finish(s)))
      } catch (e) {
        this.#unreported.set(runId, s)
        this.#o.logger.error(
          { err: e, run_id: runId, attempt },
          'worker: could not record a result; it will be written when the database answers',
        )
      } finally {
        if (this.#active.get(runId)?.attempt === attempt) this.#active.delete(runId)
      }
    })()
    this.#recording.add(written)
    void written.finally(() => this.#recording.delete(written))
    return written
  }

  /** Writes a result in its `settle` span, then counts the run's new status. */
  async #settle(s: Settlement, write: () => Promise<string | null>): Promise<void> {
    const status = await settleSpan(s.run, s.span, write)
    recordRunStatus(s.run.queue, status)
  }

  async #finish({ run, result }: Settlement): Promise<string | null> {
    const { run_id: runId, attempt } = run
    const status = await this.#finishes.run({ run: { run_id: runId, attempt }, result })
    // One line per run is too much at thousands of runs a second: successes log at debug.
    const log = result.outcome === 'succeeded' ? this.#o.logger.debug : this.#o.logger.info
    log.call(
      this.#o.logger,
      { run_id: runId, attempt, outcome: result.outcome, status },
      'worker: attempt finished',
    )
    return status
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
