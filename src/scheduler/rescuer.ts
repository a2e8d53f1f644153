/**
 * @module The rescuer: the leader's sweep that declares silent workers dead and retries what they
 * held (pgsched.rescue). It never judges a worker by silence it could not have heard: it acts only
 * once it has itself reached the database without a break for a whole heartbeat timeout, so a
 * database restart, or a new leader, does not read as every worker dying at once.
 */
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { runQueues } from '../db/queries/runs.ts'
import { rescue } from '../db/queries/workers.ts'
import { instruments } from '../telemetry/metrics.ts'
import { destination } from '../telemetry/tracing.ts'
import { Periodic } from './periodic.ts'

/** Options of a Rescuer. */
interface RescuerOptions {
  sql: SqlPool
  logger: Logger
  /** Silence after which a worker is dead. */
  heartbeatTimeoutMs: number
  /** Called after each sweep, with its error if it failed. */
  onPass?: (error?: unknown) => void
}

/** Runs the rescue sweep a few times per heartbeat timeout while this process leads. */
export class Rescuer {
  readonly #o: RescuerOptions
  readonly #loop: Periodic
  #connectedSince: number | undefined

  constructor(options: RescuerOptions) {
    this.#o = options
    const intervalMs = Math.min(10_000, Math.max(250, Math.round(options.heartbeatTimeoutMs / 4)))
    this.#loop = new Periodic({
      intervalMs,
      // A failed sweep, the loop's or runOnce's, breaks the stretch of reaching the database.
      pass: () =>
        this.#sweep().catch((e: unknown) => {
          this.#connectedSince = undefined
          throw e
        }),
      onError: (e) => options.logger.warn({ err: e }, 'scheduler: rescue sweep failed; retrying'),
      onPass: options.onPass,
    })
  }

  /** Starts sweeping; idempotent. */
  start(): Promise<void> {
    this.#connectedSince = Date.now()
    return this.#loop.start()
  }

  /** Stops and waits for the sweep in progress; idempotent. */
  stop(): Promise<void> {
    return this.#loop.stop()
  }

  /**
   * Sweeps once now, after the sweep in progress if any; rejects with its error. Like every
   * sweep, it rescues nothing until this rescuer has reached the database for a whole
   * heartbeat timeout since start().
   */
  runOnce(): Promise<void> {
    return this.#loop.runOnce()
  }

  async #sweep(): Promise<void> {
    const { sql, logger, heartbeatTimeoutMs } = this.#o
    if (
      this.#connectedSince === undefined ||
      Date.now() - this.#connectedSince < heartbeatTimeoutMs
    ) {
      await sql`SELECT 1`
      this.#connectedSince ??= Date.now()
      return
    }
    // Each lost run with the status run_finish gave it (the detail ends with ' → <status>').
    const lost: { runId: number; status: string }[] = []
    for (const a of await rescue(sql, heartbeatTimeoutMs / 1000)) {
      if (a.action === 'run_lost' && a.run_id !== null) {
        lost.push({ runId: Number(a.run_id), status: a.detail.split(' → ').at(-1) ?? '' })
      }
      logger.warn(
        { action: a.action, worker: a.worker, run_id: a.run_id, detail: a.detail },
        `scheduler: rescue: ${a.action.replace('_', ' ')}`,
      )
    }
    if (lost.length > 0) await this.#count(lost)
  }

  // A lost attempt is an outcome the worker never reports: counted here, so success and failure
  // rates include the attempts and runs of dead workers.
  async #count(lost: { runId: number; status: string }[]): Promise<void> {
    const m = instruments()
    m.rescues.add(lost.length)
    const queues = await runQueues(
      this.#o.sql,
      lost.map((l) => l.runId),
    ).catch(() => new Map<number, string | null>())
    for (const { runId, status } of lost) {
      const queue = destination(queues.get(runId))
      m.attemptsFinished.add(1, { outcome: 'lost', queue })
      if (status === 'dead') {
        m.runsFinished.add(1, { status, queue })
        m.deadLetters.add(1, { queue })
      }
    }
  }
}
