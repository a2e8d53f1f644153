/**
 * @module Fails fast while the database is down: a circuit breaker (cockatiel) around every /v1
 * request. After a few requests in a row fail to reach the database, or take longer than the
 * request timeout, the circuit opens and requests get 503 problem+json at once, without touching
 * the pool; after a pause one request probes (the others are still refused), and its success
 * closes the circuit.
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
import { databaseUnavailable, writeTimedOut } from './problem.ts'
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
  /** A request that takes longer answers 503 and counts as a failure. @default 4000 */
  requestTimeoutMs?: number
}

/**
 * How long a request may take before it answers 503. Short enough that a client is never held
 * through a failover (HAProxy routes to the new primary in 2-4 s; the primary-kill drill saw
 * submissions held 6-9 s at 10 s), long enough for a 1,000-job batch on a loaded machine.
 */
const REQUEST_TIMEOUT_MS = 4000

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
  const timeoutMs = o.requestTimeoutMs ?? REQUEST_TIMEOUT_MS
  const policy = wrap(breaker, timeout(timeoutMs, TimeoutStrategy.Aggressive))
  const retryAfter = Math.ceil(halfOpenAfter / 1000)
  return async (c, next) => {
    // While one request probes, the others are refused as while open. Held on the probe's
    // decision (cockatiel's way), a request could wait the probe's whole timeout and then its own
    // (a 503 after 6.3 s in the Postgres-restart drill); and on workerd it would wait on a promise
    // another request's I/O settles.
    if (breaker.state === CircuitState.HalfOpen) return databaseUnavailable(c, retryAfter)
    try {
      await policy.execute(async () => {
        await next()
        // Hono's onError has already answered; rethrow so that the breaker counts it.
        if (c.error && isDatabaseUnreachable(c.error)) throw c.error
      })
    } catch (e) {
      if (e instanceof BrokenCircuitError || e instanceof TaskCancelledError) {
        if (e instanceof TaskCancelledError) noteRefusal(c, 'overload')
        // A write cut off by the timeout goes on in the background: it may still commit.
        const mayHaveWritten = e instanceof TaskCancelledError && c.req.method !== 'GET'
        c.res = mayHaveWritten
          ? writeTimedOut(c, timeoutMs, retryAfter)
          : databaseUnavailable(c, retryAfter)
      } else if (!isDatabaseUnreachable(e)) {
        throw e
      }
    }
  }
}
