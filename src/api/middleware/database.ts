/**
 * @module The request's database pool, in the context as `c.get('sql')`: the app's shared pool, or
 * one opened for the request alone and ended after its response (see AppDeps.sql in app.ts).
 */
import type { Context, MiddlewareHandler } from 'hono'

import type { SqlPool } from '../../db/client.ts'
import type { AppEnv } from './auth.ts'

/** A pool opened for one request and ended after its response (workerd: a socket belongs to one request). */
export interface PerRequestSql {
  perRequest(c: Context<AppEnv>): SqlPool
}

/** Seconds a per-request pool's statements still in flight get to finish once the response is out. */
const END_TIMEOUT_SECONDS = 5

/** Whether `sql` opens a pool per request. */
function isPerRequest(sql: SqlPool | PerRequestSql): sql is PerRequestSql {
  return typeof (sql as Partial<PerRequestSql>).perRequest === 'function'
}

/** The runtime's waitUntil (workerd), or undefined where Hono has no execution context. */
function waitUntilOf(c: Context): ((p: Promise<unknown>) => void) | undefined {
  try {
    const ctx = c.executionCtx
    return (p) => ctx.waitUntil(p)
  } catch {
    // Hono throws when reading an execution context the runtime did not give.
    return undefined
  }
}

/**
 * The middleware; register it before anything that reads `c.get('sql')`. A per-request pool is ended
 * whatever the answer (a 4xx, a 503, an error turned into a response by onError: next() resolves
 * then too), without holding the response up: on workerd the end is handed to waitUntil, elsewhere
 * it goes on in the background.
 */
export function databasePool(source: SqlPool | PerRequestSql): MiddlewareHandler<AppEnv> {
  if (!isPerRequest(source)) {
    return async (c, next) => {
      c.set('sql', source)
      await next()
    }
  }
  return async (c, next) => {
    // Made for every request that comes this far, but postgres.js connects on a pool's first
    // statement only: /healthz, /metrics, a 401 or a refusal by the breaker connect to nothing.
    // (A lazy stand-in for the pool would not be the pool: db/client.ts and the group commits
    // know a pool by its identity.)
    const sql = source.perRequest(c)
    c.set('sql', sql)
    try {
      await next()
    } finally {
      // A failed end (the database already gone) leaves nothing open to end.
      const ended = sql.end({ timeout: END_TIMEOUT_SECONDS }).catch(() => {})
      waitUntilOf(c)?.(ended)
    }
  }
}
