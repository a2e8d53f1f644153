/** @module What every workload gets, and what it gives back. */
import type { BenchPostgres } from './postgres.ts'

/** The run's settings and shared services. */
export interface Ctx {
  /** --quick: smaller counts and shorter windows (the whole run under 3 minutes). */
  quick: boolean
  pg: BenchPostgres
  /** Progress on stderr. */
  log(msg: string): void
  /** `full` normally, `quick` in --quick mode. */
  scale<T>(full: T, quick: T): T
}

/** One measured figure. */
export interface Figure {
  /** Which system: 'pgsched', 'graphile-worker', 'pg-boss'. */
  system: string
  /** What was measured, e.g. 'REST submit, 64 clients'. */
  metric: string
  value: number
  unit: string
  /**
   * Set when the measurement ran out of time: `slow: did not finish in N s` and what it reached;
   * `value` is then what it reached (e.g. runs done ÷ the time limit).
   */
  slow?: string
  /**
   * A latency figure's whole distribution: p0, p1, …, p100 (101 values, same unit), for charts.
   * The pickup workload sets it on the p50 figure of each system and rate.
   */
  percentiles?: number[]
}

/** What a workload reports. */
export interface Section {
  id: string
  title: string
  figures: Figure[]
  /** Sentences worth reading beside the table: method, caveats. */
  notes: string[]
  /** CPU-seconds of the whole stack per job, where the workload measured it (for the cost section). */
  cpuSecondsPerJob?: Record<string, number>
  /** Set when the workload ran out of time as a whole (the run went on with the next one). */
  slow?: string
}

/** A workload: runs on its own databases and returns its section. */
export type Workload = (ctx: Ctx) => Promise<Section>
