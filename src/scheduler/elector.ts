/**
 * @module Leader election over a session advisory lock held by a client of its own (one
 * connection). See README.md beside this file for the design.
 */
import { sleep } from '../core/sleep.ts'
import type { Logger } from '../core/types.ts'
import { createSql, type SqlPool } from '../db/client.ts'
import {
  leaderHeld,
  leaderRecord,
  leaderReleaseAll,
  leaderTryAcquire,
} from '../db/queries/leader.ts'

/** Options of an Elector. */
interface ElectorOptions {
  /** Database URL; the elector opens its own one-connection client, whose session holds the lock. */
  url: string
  /** Who this process is, as recorded in pgsched.leader. */
  holder: string
  /** How often a follower retries the lock and a leader checks that it still holds it. */
  pollMs: number
  logger: Logger
  /** Called once leadership is won; leader-only services start here. */
  onElected: (term: number) => Promise<void>
  /** Called when leadership is lost or given up; leader-only services stop here. */
  onDemoted: () => Promise<void>
  /**
   * Called after each poll (an attempt to win the lock, or a leader's check that it still holds
   * it), with its error if it failed; isLeader tells the outcome.
   */
  onPass?: (error?: unknown) => void
}

/** Campaigns for leadership until stopped. */
export class Elector {
  readonly #o: ElectorOptions
  #running = false
  #loop: Promise<void> | undefined
  #abort = new AbortController()
  #leader = false
  #session: number | undefined

  constructor(options: ElectorOptions) {
    this.#o = options
  }

  /** Whether this process leads now. */
  get isLeader(): boolean {
    return this.#leader
  }

  /**
   * The backend pid of the session that won the lock, while leading: leader-only transactions
   * check with leaderFence that it still holds it.
   */
  get session(): number | undefined {
    return this.#leader ? this.#session : undefined
  }

  /** Starts campaigning; idempotent. */
  start(): void {
    if (this.#running) return
    this.#running = true
    this.#abort = new AbortController()
    // The loop catches what it expects; anything else must not end it without a word (a
    // rejected promise nobody awaits until stop() is silent on some runtimes, workerd's among them).
    this.#loop = this.#campaign().catch(async (e) => {
      this.#running = false
      this.#o.logger.error({ err: e }, 'scheduler: the elector failed and stopped campaigning')
      await this.#stepDown(undefined)
    })
  }

  /** Stops campaigning, steps down if leading, and waits for the loop to end; idempotent. */
  async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#abort.abort()
    await this.#loop
  }

  async #campaign(): Promise<void> {
    const { logger, pollMs } = this.#o
    let conn = this.#connect()
    // A query that hangs (database frozen, network cut) must not keep a stale leader leading.
    const bounded = <T>(p: Promise<T>) => withTimeout(p, answerTimeoutMs(pollMs))
    while (this.#running) {
      let error: unknown
      try {
        if (!this.#leader) {
          if (await bounded(leaderTryAcquire(conn))) {
            const { term, pid } = await bounded(leaderRecord(conn, this.#o.holder))
            this.#session = pid
            this.#leader = true
            logger.info({ holder: this.#o.holder, term }, 'scheduler: elected leader')
            await this.#o.onElected(term)
          }
        } else if (!(await bounded(leaderHeld(conn)))) {
          throw new Error('the leader lock is no longer held by this session')
        }
      } catch (e) {
        error = e
        if (this.#running) logger.warn({ err: e }, 'scheduler: leadership check failed')
        if (e instanceof NoAnswer) {
          // The connection may be stuck on a dead path (a partition, a primary gone without a
          // word) until TCP gives up, minutes later: every later query would queue behind the
          // hung one. Drop it and campaign on a fresh one, a new session holding nothing.
          const stuck = conn
          conn = this.#connect()
          void stuck.end({ timeout: 0 }).catch(() => {})
        }
        await this.#stepDown(e instanceof NoAnswer ? undefined : conn)
      }
      try {
        this.#o.onPass?.(error)
      } catch (e) {
        logger.error({ err: e }, 'scheduler: the elector pass callback failed')
      }
      try {
        await sleep(jitter(pollMs), this.#abort.signal)
      } catch (e) {
        // Without timers (a runtime that forbids them here, such as workerd at module scope) the
        // loop cannot pace itself: stop campaigning, loudly, rather than spin or die unseen.
        logger.error(
          { err: e },
          'scheduler: the elector cannot wait between checks; it stops campaigning',
        )
        this.#running = false
      }
    }
    await this.#stepDown(conn)
    await conn.end({ timeout: 1 }).catch(() => {})
  }

  // Not a connection reserved from the shared pool: postgres.js crashes the process when a query
  // is sent on a reserved connection whose socket has closed (porsager/postgres#1208), and a pool
  // of one reconnects by itself. A reconnect is a new session without the lock, which the
  // leader's check (the lock held by this backend, in pg_locks) notices.
  #connect(): SqlPool {
    const { pollMs, holder } = this.#o
    return createSql(this.#o.url, {
      max: 1,
      // Operators find the leader's session by it (pg_stat_activity); Postgres keeps 63 bytes.
      applicationName: `pgsched-leader ${holder}`,
      connectTimeoutSeconds: Math.max(1, Math.ceil(pollMs / 1000)),
      // The server ends this session once it has heard nothing for that long, which frees the
      // lock of a leader cut off from it (partitioned, frozen) even when its TCP connection
      // stays open: through a proxy such as HAProxy, or with packets silently dropped. A live
      // elector is never that idle (it asks every poll interval), and a cut-off leader has
      // stepped down before (its check gets no answer within answerTimeoutMs).
      settings: { idle_session_timeout: String(sessionIdleTimeoutMs(pollMs)) },
    })
  }

  /** Stops leading; `conn`, the session that may hold the lock, releases it (none: a new one). */
  async #stepDown(conn: SqlPool | undefined): Promise<void> {
    // Session locks are re-entrant: release every hold, in case the session survived.
    if (conn) await withTimeout(leaderReleaseAll(conn), 1000).catch(() => {})
    if (!this.#leader) return
    this.#leader = false
    this.#o.logger.info({ holder: this.#o.holder }, 'scheduler: stepped down')
    await this.#o
      .onDemoted()
      .catch((e) => this.#o.logger.error({ err: e }, 'scheduler: stopping leader services failed'))
  }
}

/** How long a poll waits for the database before the elector steps down: a poll interval, at least 1 s. */
function answerTimeoutMs(pollMs: number): number {
  return Math.max(pollMs, 1000)
}

/**
 * The elector's session's idle_session_timeout: three poll intervals, at least 3 s. It must exceed
 * the longest a cut-off leader can go on leading, the poll interval (+10 % jitter) plus
 * answerTimeoutMs, so that its lock is never freed for another while it still leads.
 */
export function sessionIdleTimeoutMs(pollMs: number): number {
  return Math.max(3 * pollMs, 3000)
}

// ±10 % so that followers started together do not poll in lockstep.
function jitter(ms: number): number {
  return Math.round(ms * (0.9 + Math.random() * 0.2))
}

/** A query that got no answer in time. */
class NoAnswer extends Error {}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NoAnswer(`no answer from the database in ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}
