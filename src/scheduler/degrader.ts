/**
 * @module The degradation governor: in automatic mode the leader measures the queue depth and
 * sets the level from the thresholds (pgsched.evaluate_degradation); changes are logged here and
 * in pgsched.degradation_events with their cause.
 */
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { degradationEvaluate } from '../db/queries/degradation.ts'
import { Periodic } from './periodic.ts'

/** Options of the degrader. */
interface DegraderOptions {
  sql: SqlPool
  logger: Logger
  /** @default 10000 */
  intervalMs?: number
  /** Called after each pass, with its error if it failed. */
  onPass?: (error?: unknown) => void
}

/** Evaluates degradation every interval while this process leads. */
export function createDegrader(o: DegraderOptions): Periodic {
  let level: number | undefined
  const pass = async () => {
    const d = await degradationEvaluate(o.sql)
    if (level !== undefined && d.level !== level) {
      o.logger.warn(
        { from: level, to: d.level, mode: d.mode, cause: d.cause },
        'scheduler: degradation level changed',
      )
    }
    level = d.level
  }
  return new Periodic({
    intervalMs: o.intervalMs ?? 10_000,
    pass,
    onError: (e) => o.logger.warn({ err: e }, 'scheduler: degradation check failed'),
    onPass: o.onPass,
  })
}
