/** @module Queries on pgsched.degradation: the level, its changes, and the automatic mode. */
import type { Degradation } from '../../core/types.ts'
import type { Sql } from '../client.ts'

const columns = (sql: Sql) => sql`
  mode, level, cause, changed_at, warn_queue_depth, critical_queue_depth, queue_depth, measured_at,
  resolver_fallbacks`

/** The degradation state. */
export async function degradationGet(sql: Sql): Promise<Degradation> {
  const [row] = await sql<Degradation[]>`SELECT ${columns(sql)} FROM pgsched.degradation`
  return row!
}

/** A change of level or mode, as logged. */
interface DegradationEvent {
  at: Date
  from_level: number
  to_level: number
  mode: string
  cause: string
  actor: string
}

/** The latest changes, newest first. */
export async function degradationEvents(sql: Sql, limit: number): Promise<DegradationEvent[]> {
  return sql<DegradationEvent[]>`
    SELECT at, from_level, to_level, mode, cause, actor FROM pgsched.degradation_events
    ORDER BY id DESC LIMIT ${limit}`
}

/** What an admin sets (pgsched.set_degradation). */
interface DegradationChange {
  mode: 'auto' | 'manual'
  level?: number
  reason?: string
  warn_queue_depth?: number
  critical_queue_depth?: number
}

/** Sets the mode (and a manual level, thresholds); returns the new state. */
export async function degradationSet(
  sql: Sql,
  c: DegradationChange,
  actor: string,
): Promise<Degradation> {
  const [row] = await sql<Degradation[]>`
    SELECT ${columns(sql)} FROM pgsched.set_degradation(
      mode => ${c.mode}, level => ${c.level ?? null}::integer, reason => ${c.reason ?? null},
      actor => ${actor}, warn_queue_depth => ${c.warn_queue_depth ?? null}::bigint,
      critical_queue_depth => ${c.critical_queue_depth ?? null}::bigint)`
  return row!
}

/** Measures the queue depth and, in automatic mode, sets the level from it. */
export async function degradationEvaluate(sql: Sql): Promise<Degradation> {
  const [row] = await sql<Degradation[]>`
    SELECT ${columns(sql)} FROM pgsched.evaluate_degradation()`
  return row!
}
