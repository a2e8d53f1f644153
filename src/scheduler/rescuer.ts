/**
 * @module The rescuer: the leader's sweep that declares silent workers dead and retries what they
 * held (pgsched.rescue). It never judges a worker by silence it could not have heard: it acts only
 * once it has itself reached the database without a break for a whole heartbeat timeout, so a
 * database restart, or a new leader, does not read as every worker dying at once.
 */
import { sleep } from '../core/sleep.ts'
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { rescue } from '../db/queries/workers.ts'

/** Options of a Rescuer. */
export interface RescuerOptions {
  sql: SqlPool
  logger: Logger
  /** Silence after which a worker is dead. */
  heartbeatTimeoutMs: number
}

/** Runs the rescue sweep a few times per heartbeat timeout while this process leads. */
export class Rescuer {
  readonly #o: RescuerOptions
  #running = false
  #abort = new AbortController()
  #loop: Promise<void> | undefined

  constructor(options: RescuerOptions) {
    this.#o = options
  }

  /** Starts sweeping; idempotent. */
  async start(): Promise<void> {
    if (this.#running) return
    this.#running = true
    this.#abort = new AbortController()
    this.#loop = this.#run(this.#abort.signal)
  }

  /** Stops and waits for the sweep in progress; idempotent. */
  async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#abort.abort()
    await this.#loop
  }

  async #run(signal: AbortSignal): Promise<void> {
    const { sql, logger, heartbeatTimeoutMs } = this.#o
    const intervalMs = Math.min(10_000, Math.max(250, Math.round(heartbeatTimeoutMs / 4)))
    let connectedSince: number | undefined = Date.now()
    while (!signal.aborted) {
      await sleep(intervalMs, signal)
      if (signal.aborted) break
      try {
        if (connectedSince !== undefined && Date.now() - connectedSince >= heartbeatTimeoutMs) {
          for (const a of await rescue(sql, heartbeatTimeoutMs / 1000)) {
            logger.warn(
              { action: a.action, worker: a.worker, run_id: a.run_id, detail: a.detail },
              `scheduler: rescue: ${a.action.replace('_', ' ')}`,
            )
          }
        } else {
          await sql`SELECT 1`
          connectedSince ??= Date.now()
        }
      } catch (e) {
        if (signal.aborted) break
        connectedSince = undefined
        logger.warn({ err: e }, 'scheduler: rescue sweep failed; retrying')
      }
    }
  }
}
