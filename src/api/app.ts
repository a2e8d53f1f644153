/** @module The HTTP API: createApp(deps) builds a Hono app that runs on any runtime. */
import { OpenAPIHono } from '@hono/zod-openapi'
import { bodyLimit } from 'hono/body-limit'

import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { LoadShedding } from './load-shedding.ts'
import { type AppEnv, allow, authenticate } from './middleware/auth.ts'
import { databaseBreaker } from './middleware/breaker.ts'
import { databasePool, type PerRequestSql } from './middleware/database.ts'
import { fieldErrors, onError, problem } from './middleware/problem.ts'
import { httpTelemetry, submissionMetrics } from './middleware/telemetry.ts'
import { registerAdminRoutes } from './routes/admin.ts'
import { registerClusterRoutes } from './routes/cluster.ts'
import { registerHealthRoutes } from './routes/health.ts'
import { registerJobLimitRoutes } from './routes/job-limits.ts'
import { registerJobRoutes } from './routes/jobs.ts'
import { registerRunRoutes } from './routes/runs.ts'
import type { TokenVerifier } from './tokens.ts'

/** Largest request body the API reads: a command, payload and schedule fit with room to spare. */
const BODY_LIMIT_BYTES = 1024 * 1024

/**
 * Largest request header the API reads, and largest total of all of them: a bearer token from an
 * identity provider fits with room to spare. Node's own limit is 16 KiB in all; a server that lets
 * more through gets a problem+json 431 from here.
 */
const HEADER_LIMIT_BYTES = 8 * 1024
/** @see HEADER_LIMIT_BYTES */
export const HEADERS_LIMIT_BYTES = 16 * 1024

export type { PerRequestSql }

/** What the API needs. Internal seam: may change without notice. */
export interface AppDeps {
  /**
   * The database: one pool for the app's whole life, or a PerRequestSql that opens a pool for
   * each request and has it ended after the response (workerd, where a socket belongs to the one
   * request that opened it). Either way the app, and what it keeps in memory (the circuit breaker,
   * the cached degradation level), lives across requests; routes read the request's pool as
   * `c.get('sql')`. Per request, nothing is grouped across requests: concurrent REST submissions are
   * one transaction each rather than one group commit, so a burst costs more commits. And only
   * what one request does can use session features (a prepared statement, a session setting, an
   * advisory lock): the next request has another connection.
   */
  sql: SqlPool | PerRequestSql
  verifyToken: TokenVerifier
  logger: Logger
  /** Submissions a minute per user. @default RATE_LIMIT_PER_MINUTE_DEFAULT (core/config.ts) */
  rateLimitPerMinute?: number
  /** Whether non-admins may give command jobs network access. @default 'deny' */
  jobNetwork?: 'deny' | 'allow'
  /**
   * The process's metrics in the Prometheus text format, served at GET /metrics (bearer auth, any
   * role); it must answer from memory, never from the database. Without it /metrics is a 404.
   */
  metrics?: () => Promise<string>
}

/** The content type of the Prometheus text exposition format. */
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** Builds the API. */
export function createApp(deps: AppDeps): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const errors = fieldErrors(result.error)
        return problem(
          c,
          'validation',
          errors.map((e) => `${e.field}: ${e.message}`).join('; '),
          errors,
        )
      }
    },
  })
  app.onError(onError(deps.logger))
  app.notFound((c) => problem(c, 'not_found', `no route for ${c.req.method} ${c.req.path}`))

  app.use('*', httpTelemetry())
  // Before every middleware that can refuse a submission, so that each refusal is counted.
  app.use('/v1/jobs', submissionMetrics('rest'))
  app.use('/v1/jobs/batch', submissionMetrics('batch'))
  app.use('*', async (c, next) => {
    let total = 0
    for (const [name, value] of c.req.raw.headers) {
      const size = name.length + value.length
      total += size
      if (size > HEADER_LIMIT_BYTES || total > HEADERS_LIMIT_BYTES) {
        const detail =
          size > HEADER_LIMIT_BYTES
            ? `the ${name} header is larger than ${HEADER_LIMIT_BYTES} bytes`
            : `the request headers are larger than ${HEADERS_LIMIT_BYTES} bytes in all`
        return problem(c, 'header_too_large', detail, [{ field: name, message: 'too large' }])
      }
    }
    await next()
  })
  // Before everything that touches the database: it reads the request's pool from the context.
  app.use('*', databasePool(deps.sql))
  registerHealthRoutes(app)
  const { metrics } = deps
  if (metrics) {
    // Not in the OpenAPI document: it is for Prometheus, not API clients. No database breaker:
    // a scrape reads memory only, so it answers even while the database is away.
    app.get('/metrics', authenticate(deps.verifyToken), allow('read'), async (c) =>
      c.body(await metrics(), 200, { 'content-type': PROMETHEUS_CONTENT_TYPE }),
    )
  }
  app.use('/v1/*', authenticate(deps.verifyToken))
  app.use(
    '/v1/*',
    bodyLimit({
      maxSize: BODY_LIMIT_BYTES,
      onError: (c) =>
        problem(c, 'too_large', `the request body is larger than ${BODY_LIMIT_BYTES} bytes`),
    }),
  )
  app.use('/v1/*', databaseBreaker({ logger: deps.logger }))
  const shed = new LoadShedding(deps.rateLimitPerMinute)
  registerJobRoutes(app, shed, deps.jobNetwork)
  registerRunRoutes(app, shed)
  registerClusterRoutes(app)
  registerAdminRoutes(app, shed, deps.logger)
  registerJobLimitRoutes(app, deps.logger)

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
  })
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'pgsched',
      version: '1.0.0',
      description: 'A distributed job scheduler whose only store is PostgreSQL.',
    },
  })
  return app
}
