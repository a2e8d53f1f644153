/** @module The run history's maintenance (pgsched.maintain_history): day partitions by UTC day. */
import type { Sql } from '../client.ts'

/** What one maintenance pass did, as pgsched.maintain_history reports it. */
export interface HistoryMaintenance {
  /** Partitions created ahead. */
  created: string[]
  /** Partitions of expired days dropped. */
  dropped: string[]
  /** Runs of dropped days kept (dead letters, unfinished runs), moved to the DEFAULT partitions. */
  kept: number
  /** Kept runs of expired days since handled, deleted from the DEFAULT partitions. */
  deleted: number
  /** Partitions whose locks were not granted within the lock timeout: retried next pass. */
  skipped: string[]
}

/** Options of one pass; each defaults to the function's default. */
export interface HistoryMaintenanceOptions {
  now?: Date
  retentionDays?: number
  daysAhead?: number
  lockTimeoutMs?: number
}

/** Creates the coming days' partitions and drops expired days (pgsched.maintain_history). */
export async function historyMaintain(
  sql: Sql,
  o: HistoryMaintenanceOptions = {},
): Promise<HistoryMaintenance> {
  const [row] = await sql<{ result: HistoryMaintenance }[]>`
    SELECT pgsched.maintain_history(
      coalesce(${o.now ?? null}::timestamptz, now()), coalesce(${o.retentionDays ?? null}::int, 30),
      coalesce(${o.daysAhead ?? null}::int, 3), coalesce(${o.lockTimeoutMs ?? null}::int, 1000)
    ) AS result`
  return row!.result
}
