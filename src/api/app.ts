/** @module The HTTP API: createApp(deps) builds a Hono app that runs on any runtime. */
import { OpenAPIHono } from '@hono/zod-openapi'

import { PgschedError } from '../core/errors.ts'
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { type AppEnv, authenticate } from './middleware/auth.ts'
import { fieldErrors, onError, problem } from './middleware/problem.ts'
import { registerHealthRoutes } from './routes/health.ts'
import { registerJobRoutes } from './routes/jobs.ts'
import { registerRunRoutes } from './routes/runs.ts'
import type { TokenVerifier } from './tokens.ts'

/** What the API needs. Internal seam: may change without notice. */
export interface AppDeps {
  sql: SqlPool
  verifyToken: TokenVerifier
  logger: Logger
}

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

  registerHealthRoutes(app as never, deps.sql)
  app.use('/v1/*', authenticate(deps.verifyToken))
  registerJobRoutes(app, deps.sql)
  registerRunRoutes(app, deps.sql)

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

export { PgschedError }
