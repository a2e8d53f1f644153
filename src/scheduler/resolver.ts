/**
 * @module The dependency resolver: the leader's sweep over waiting runs, for anything the
 * in-transaction promotion missed. Behind a circuit breaker (cockatiel): when its checks keep
 * failing, it falls back to promoting waiting runs without checking their dependencies, as
 * degradation level 3 does; each fallback is logged and counted. While it runs (while this
 * process leads) the breaker's state is the gauge `pgsched.breaker.state{breaker="resolver"}`
 * (0 in a former leader, see leader-gauges.ts).
 */
import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleAll,
} from 'cockatiel'

import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { promoteWaiting, resolveWaiting } from '../db/queries/dependencies.ts'
import { instruments } from '../telemetry/metrics.ts'
import { observeLeaderState } from './leader-gauges.ts'
import { Periodic } from './periodic.ts'

/** Waiting runs looked at per pass. */
const BATCH = 500

/** Options of the resolver. */
interface ResolverOptions {
  sql: SqlPool
  logger: Logger
  /** @default 5000 */
  intervalMs?: number
  /** Failed passes in a row that open the circuit. @default 3 */
  failures?: number
  /** How long the circuit stays open before a check is tried again. @default 30000 */
  halfOpenAfterMs?: number
  /** Called after each pass, with its error if it failed. */
  onPass?: (error?: unknown) => void
}

/** The gauge's value of a breaker state: 0 closed, 1 half-open, 2 open (isolated counts as open). */
const BREAKER_GAUGE: Record<CircuitState, number> = {
  [CircuitState.Closed]: 0,
  [CircuitState.HalfOpen]: 1,
  [CircuitState.Open]: 2,
  [CircuitState.Isolated]: 2,
}

/** The resolver service. */
export interface Resolver {
  start(): Promise<void>
  stop(): Promise<void>
  runOnce(): Promise<void>
}

/** Resolves waiting runs every interval while this process leads. */
export function createResolver(o: ResolverOptions): Resolver {
  const breaker = circuitBreaker(handleAll, {
    halfOpenAfter: o.halfOpenAfterMs ?? 30_000,
    breaker: new ConsecutiveBreaker(o.failures ?? 3),
  })
  breaker.onBreak(() =>
    o.logger.error('scheduler: dependency checks keep failing; promoting without them'),
  )
  breaker.onReset(() => o.logger.info('scheduler: dependency checks work again'))
  const pass = async () => {
    try {
      const n = await breaker.execute(() => resolveWaiting(o.sql, BATCH))
      if (n > 0) o.logger.debug({ settled: n }, 'scheduler: waiting runs settled')
    } catch (e) {
      if (!(e instanceof BrokenCircuitError)) throw e
      const n = await promoteWaiting(o.sql, BATCH, true)
      instruments().resolverFallbacks.add(1)
      o.logger.warn(
        { promoted: n },
        'scheduler: dependency resolver fallback: waiting runs promoted without checks',
      )
    }
  }
  const loop = new Periodic({
    intervalMs: o.intervalMs ?? 5000,
    pass,
    onError: (e) => o.logger.warn({ err: e }, 'scheduler: dependency sweep failed'),
    onPass: o.onPass,
  })
  let leading = false
  let observed = false
  return {
    async start() {
      if (!observed) {
        observed = true
        // Registered for good: see leader-gauges.ts for why it is not removed on stop.
        observeLeaderState('pgsched.breaker.state', () =>
          leading ? [[BREAKER_GAUGE[breaker.state], { breaker: 'resolver' }]] : undefined,
        )
      }
      leading = true
      await loop.start()
    },
    async stop() {
      await loop.stop()
      leading = false
    },
    runOnce: () => loop.runOnce(),
  }
}
