/**
 * @module The scheduler role: campaigns for leadership and, while leading, runs the leader-only
 * services: the ticker, the rescuer, the dependency resolver and the degradation governor. One
 * coordinator starts and stops them as leadership changes.
 */

import { HEARTBEAT_TIMEOUT_SECONDS_DEFAULT } from '../core/config.ts'
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { createDegrader } from './degrader.ts'
import { Elector } from './elector.ts'
import { Rescuer } from './rescuer.ts'
import { createResolver } from './resolver.ts'
import { Ticker } from './ticker.ts'

/** Options of the scheduler role. */
export interface SchedulerOptions {
  sql: SqlPool
  /** Database URL, for the elector's own connection (its session holds the leader lock). */
  url: string
  logger: Logger
  /** Identity recorded as leader, e.g. host:pid. */
  holder: string
  /** Follower retry interval. */
  leaderPollMs: number
  /** Silence after which the leader declares a worker dead. @default HEARTBEAT_TIMEOUT_SECONDS_DEFAULT s */
  heartbeatTimeoutMs?: number
  /** How often the leader sweeps waiting runs. @default 5000 */
  resolveIntervalMs?: number
  /** How often the leader measures the queue for automatic degradation. @default 10000 */
  degradeIntervalMs?: number
}

/** A leader-only service. */
interface LeaderService {
  start(): Promise<void>
  stop(): Promise<void>
}

/** The scheduler role of one process. */
export class Scheduler {
  readonly #elector: Elector
  readonly #services: LeaderService[]

  constructor(o: SchedulerOptions) {
    this.#services = [
      new Ticker({ sql: o.sql, logger: o.logger }),
      new Rescuer({
        sql: o.sql,
        logger: o.logger,
        heartbeatTimeoutMs: o.heartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_SECONDS_DEFAULT * 1000,
      }),
      createResolver({ sql: o.sql, logger: o.logger, intervalMs: o.resolveIntervalMs }),
      createDegrader({ sql: o.sql, logger: o.logger, intervalMs: o.degradeIntervalMs }),
    ]
    this.#elector = new Elector({
      url: o.url,
      holder: o.holder,
      pollMs: o.leaderPollMs,
      logger: o.logger,
      onElected: async () => {
        for (const s of this.#services) await s.start()
      },
      onDemoted: async () => {
        for (const s of [...this.#services].reverse()) await s.stop()
      },
    })
  }

  /** Whether this process leads now. */
  get isLeader(): boolean {
    return this.#elector.isLeader
  }

  /** Starts campaigning. */
  start(): void {
    this.#elector.start()
  }

  /** Steps down and stops leader services. */
  stop(): Promise<void> {
    return this.#elector.stop()
  }
}
