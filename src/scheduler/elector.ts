/**
 * @module Leader election over a session advisory lock held on one reserved connection.
 * See README.md beside this file for the design.
 */

import { sleep } from '../core/sleep.ts'
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { leaderRecord, leaderRelease, leaderTryAcquire } from '../db/queries/leader.ts'

/** Options of an Elector. */
export interface ElectorOptions {
  sql: SqlPool
  /** Who this process is, as recorded in pgsched.leader. */
  holder: string
  /** How often a follower retries the lock and a leader checks it still holds its connection. */
  pollMs: number
  logger: Logger
  /** Called once leadership is won; leader-only services start here. */
  onElected: (term: number) => Promise<void>
  /** Called when leadership is lost or given up; leader-only services stop here. */
  onDemoted: () => Promise<void>
}

/** Campaigns for leadership until stopped. */
export class Elector {
  readonly #o: ElectorOptions
  #running = false
  #loop: Promise<void> | undefined
  #abort = new AbortController()
  #leader = false

  constructor(options: ElectorOptions) {
    this.#o = options
  }

  /** Whether this process leads now. */
  get isLeader(): boolean {
    return this.#leader
  }

  /** Starts campaigning; idempotent. */
  start(): void {
    if (this.#running) return
    this.#running = true
    this.#abort = new AbortController()
    this.#loop = this.#campaign()
  }

  /** Stops campaigning, steps down if leading, and waits for the loop to end; idempotent. */
  async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#abort.abort()
    await this.#loop
  }

  async #campaign(): Promise<void> {
    const { sql, logger, pollMs } = this.#o
    while (this.#running) {
      let conn: Awaited<ReturnType<SqlPool['reserve']>> | undefined
      try {
        conn = await sql.reserve()
        while (this.#running) {
          if (!this.#leader && (await leaderTryAcquire(conn))) {
            const term = await leaderRecord(conn, this.#o.holder)
            this.#leader = true
            logger.info({ holder: this.#o.holder, term }, 'scheduler: elected leader')
            await this.#o.onElected(term)
          } else if (this.#leader) {
            // The lock lives as long as this session: a failing ping means it may be gone.
            await conn`SELECT 1`
          }
          await sleep(jitter(pollMs), this.#abort.signal)
        }
      } catch (e) {
        if (this.#running)
          logger.warn({ err: e }, 'scheduler: leader connection failed; campaigning again')
      } finally {
        // Never hand a connection that may hold the lock back to the pool.
        if (conn && this.#leader) await leaderRelease(conn).catch(() => {})
        conn?.release()
        if (this.#leader) {
          this.#leader = false
          logger.info({ holder: this.#o.holder }, 'scheduler: stepped down')
          await this.#o
            .onDemoted()
            .catch((e) => logger.error({ err: e }, 'scheduler: stopping leader services failed'))
        }
      }
      if (this.#running) await sleep(jitter(pollMs), this.#abort.signal)
    }
  }
}

// ±10 % so that followers started together do not poll in lockstep.
function jitter(ms: number): number {
  return Math.round(ms * (0.9 + Math.random() * 0.2))
}
