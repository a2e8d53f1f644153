/**
 * @module The degradation governor: in automatic mode the leader measures the queue depth and
 * sets the level from the thresholds (pgsched.evaluate_degradation); changes are logged here and
 * in pgsched.degradation_events with their cause. While it runs (while this process leads) the
 * level it last read is the gauge `pgsched.degradation.level`; a former leader reads 0 (see
 * leader-gauges.ts), so a stale level never sits beside the leader's: take the max over processes.
 */
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { degradationEvaluate } from '../db/queries/degradation.ts'
import { observeLeaderState } from './leader-gauges.ts'
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

/** The degradation governor service. */
export interface Degrader {
  start(): Promise<void>
  stop(): Promise<void>
  runOnce(): Promise<void>
}

/** Evaluates degradation every interval while this process leads. */
export function createDegrader(o: DegraderOptions): Degrader {
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
  const loop = new Periodic({
    intervalMs: o.intervalMs ?? 10_000,
    pass,
    onError: (e) => o.logger.warn({ err: e }, 'scheduler: degradation check failed'),
    onPass: o.onPass,
  })
  let leading = false
  let observed = false
  return {
    async start() {
      if (!observed) {
        observed = true
        // Registered for good: see leader-gauges.ts for why it is not removed on stop.
        observeLeaderState('pgsched.degradation.level', () =>
          leading && level !== undefined ? [[level]] : undefined,
        )
      }
      if (!leading) {
        // A level read while not leading (runOnce) is not this leadership's.
        level = undefined
        leading = true
      }
      await loop.start()
    },
    async stop() {
      await loop.stop()
      leading = false
    },
    runOnce: () => loop.runOnce(),
  }
}
