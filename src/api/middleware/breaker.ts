/**
 * @module Fails fast while the database is down: a circuit breaker (cockatiel) around every /v1
 * request. After a few requests in a row fail to reach the database, or take longer than the
 * request timeout, the circuit opens and requests get 503 problem+json at once, without touching
 * the pool; after a pause one request probes, and its success closes the circuit.
 */
import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
  TaskCancelledError,
  TimeoutStrategy,
  timeout,
  wrap,
} from 'cockatiel'
import type { MiddlewareHandler } from 'hono'

import type { Logger } from '../../core/types.ts'
import { isDatabaseUnreachable } from '../../db/client.ts'
import { observe } from '../../telemetry/metrics.ts'
import { databaseUnavailable } from './problem.ts'
import { noteRefusal } from './telemetry.ts'

/** The breaker's state as the gauge `pgsched.breaker.state` reads it. */
const STATE_VALUE: Record<CircuitState, number> = {
  [CircuitState.Closed]: 0,
  [CircuitState.HalfOpen]: 1,
  [CircuitState.Open]: 2,
  [CircuitState.Isolated]: 2,
}

/** Options of the breaker. */
interface BreakerOptions {
  logger: Logger
  /** Failures in a row that open the circuit. @default 3 */
  failures?: number
  /** How long the circuit stays open before a probe. @default 2000 */
  halfOpenAfterMs?: number
  /** A request that takes longer answers 503 and counts as a failure. @default 10000 */
  requestTimeoutMs?: number
}

/** The middleware. One breaker per app: every request shares what it learns. */
export function databaseBreaker(o: BreakerOptions): MiddlewareHandler {
  const halfOpenAfter = o.halfOpenAfterMs ?? 2000
  const isFailure = (e: unknown) => e instanceof TaskCancelledError || isDatabaseUnreachable(e)
  const breaker = circuitBreaker(handleWhen(isFailure), {
    halfOpenAfter,
    breaker: new ConsecutiveBreaker(o.failures ?? 3),
  })
  breaker.onBreak(() => o.logger.warn('api: database unreachable; answering 503 until it is back'))
  breaker.onReset(() => o.logger.info('api: database reachable again'))
  // The app has no stop(): the gauge holds the breaker weakly and lets go once the app is gone.
  const held = new WeakRef(breaker)
  const unobserve = observe('pgsched.breaker.state', () => {
    const b = held.deref()
    if (!b) unobserve()
    return b ? [[STATE_VALUE[b.state], { breaker: 'api_database' }]] : []
  })
  const policy = wrap(breaker, timeout(o.requestTimeoutMs ?? 10_000, TimeoutStrategy.Aggressive))
  const retryAfter = Math.ceil(halfOpenAfter / 1000)
  return async (c, next) => {
    try {
      await policy.execute(async () => {
        await next()
        // Hono's onError has already answered; rethrow so that the breaker counts it.
        if (c.error && isDatabaseUnreachable(c.error)) throw c.error
      })
    } catch (e) {
      if (e instanceof BrokenCircuitError || e instanceof TaskCancelledError) {
        if (e instanceof TaskCancelledError) noteRefusal(c, 'overload')
        c.res = databaseUnavailable(c, retryAfter)
      } else if (!isDatabaseUnreachable(e)) {
        throw e
      }
    }
  }
}
