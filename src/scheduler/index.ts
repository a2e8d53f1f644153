/**
 * @module The scheduler role: campaigns for leadership and, while leading, runs the leader-only
 * services: the ticker, the rescuer, the dependency resolver, the degradation governor, the
 * stats collector and the history pruner. One coordinator starts and stops them as leadership changes.
 */

import { HEARTBEAT_TIMEOUT_SECONDS_DEFAULT } from '../core/config.ts'
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { leaderFence } from '../db/queries/leader.ts'
import { instruments, observe } from '../telemetry/metrics.ts'
import { createDegrader } from './degrader.ts'
import { Elector } from './elector.ts'
import { createPruner } from './pruner.ts'
import { Rescuer } from './rescuer.ts'
import { createResolver } from './resolver.ts'
import { StatsCollector } from './stats.ts'
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
  /** How often the leader counts runs and workers for the metrics. @default STATS_INTERVAL_MS_DEFAULT */
  statsIntervalMs?: number
  /** Days of run history kept. @default HISTORY_RETENTION_DAYS_DEFAULT */
  historyRetentionDays?: number
  /** How often the leader maintains the history partitions. @default 600000 */
  historyIntervalMs?: number
  /**
   * Called after each pass of a service (each poll of the elector), with its error if it failed:
   * a signal to wait on, for tests and metrics, instead of time.
   */
  onPass?: (service: SchedulerService, error?: unknown) => void
}

/** The parts of the scheduler role, as onPass and runOnce name them. */
export type SchedulerService = 'elector' | LeaderServiceName

/** The leader-only services. */
export type LeaderServiceName = 'ticker' | 'rescuer' | 'resolver' | 'degrader' | 'stats' | 'pruner'

/** A leader-only service. */
interface LeaderService {
  start(): Promise<void>
  stop(): Promise<void>
  runOnce(): Promise<unknown>
}

/** The scheduler role of one process. */
export class Scheduler {
  readonly #elector: Elector
  // Started in the order written (ticker, rescuer, resolver, degrader, stats, pruner), stopped in
  // reverse.
  readonly #byName: Record<LeaderServiceName, LeaderService>
  readonly #holder: string
  #observed = false

  constructor(o: SchedulerOptions) {
    this.#holder = o.holder
    const onPass = (service: SchedulerService) =>
      o.onPass && ((error?: unknown) => o.onPass!(service, error))
    this.#byName = {
      ticker: new Ticker({
        sql: o.sql,
        logger: o.logger,
        onPass: onPass('ticker'),
        // A tick batch commits only if the elector's session still held the lock at its end.
        fence: (tx) => leaderFence(tx, this.#elector.session),
      }),
      rescuer: new Rescuer({
        sql: o.sql,
        logger: o.logger,
        heartbeatTimeoutMs: o.heartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_SECONDS_DEFAULT * 1000,
        onPass: onPass('rescuer'),
      }),
      resolver: createResolver({
        sql: o.sql,
        logger: o.logger,
        intervalMs: o.resolveIntervalMs,
        onPass: onPass('resolver'),
      }),
      degrader: createDegrader({
        sql: o.sql,
        logger: o.logger,
        intervalMs: o.degradeIntervalMs,
        onPass: onPass('degrader'),
      }),
      stats: new StatsCollector({
        sql: o.sql,
        logger: o.logger,
        intervalMs: o.statsIntervalMs,
        onPass: onPass('stats'),
      }),
      pruner: createPruner({
        sql: o.sql,
        logger: o.logger,
        retentionDays: o.historyRetentionDays,
        intervalMs: o.historyIntervalMs,
        onPass: onPass('pruner'),
      }),
    }
    this.#elector = new Elector({
      url: o.url,
      holder: o.holder,
      pollMs: o.leaderPollMs,
      logger: o.logger,
      onElected: async () => {
        instruments().leaderChanges.add(1, { change: 'acquired' })
        for (const s of Object.values(this.#byName)) await s.start()
      },
      onDemoted: async () => {
        instruments().leaderChanges.add(1, { change: 'lost' })
        for (const s of Object.values(this.#byName).reverse()) await s.stop()
      },
      onPass: onPass('elector'),
    })
  }

  /** Whether this process leads now. */
  get isLeader(): boolean {
    return this.#elector.isLeader
  }

  /**
   * Starts campaigning, and reports `pgsched.leading{holder}`: 1 leading, else 0 (also once
   * stopped: the SDK would keep reporting the last value of a removed observer).
   */
  start(): void {
    if (!this.#observed) {
      this.#observed = true
      observe('pgsched.leading', () => [[this.isLeader ? 1 : 0, { holder: this.#holder }]])
    }
    this.#elector.start()
  }

  /** Steps down and stops leader services. */
  stop(): Promise<void> {
    return this.#elector.stop()
  }

  /**
   * Runs one pass of a leader service now, after its pass in progress if any, leading or not
   * (every leader-only write is safe to repeat); rejects with the pass's error.
   */
  async runOnce(service: LeaderServiceName): Promise<void> {
    await this.#byName[service].runOnce()
  }
}
