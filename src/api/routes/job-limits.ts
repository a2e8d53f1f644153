/** @module Admin routes: the ceilings on command jobs' resource limits. */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi'

import type { Logger } from '../../core/types.ts'
import {
  type JobLimitCeilings,
  settingsJobLimits,
  settingsSetJobLimits,
} from '../../db/queries/settings.ts'
import { type AppEnv, allow } from '../middleware/auth.ts'
import { jsonResponse, problemResponses, security } from '../openapi.ts'
import { JobLimitCeilingsChangeSchema, JobLimitCeilingsSchema } from '../schemas.ts'

const problems = problemResponses('resource', 'never')

function shown(s: JobLimitCeilings) {
  return { ceilings: s.job_limit_ceilings, network_allowed: s.job_network_allowed }
}

/** Registers GET and PUT /v1/admin/job-limits. */
export function registerJobLimitRoutes(app: OpenAPIHono<AppEnv>, logger: Logger): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/admin/job-limits',
      summary: 'The ceilings on what a command job may ask for in limits',
      security,
      middleware: [allow('operate')],
      responses: { 200: jsonResponse(JobLimitCeilingsSchema, 'The ceilings'), ...problems },
    }),
    async (c) => {
      return c.json(shown(await settingsJobLimits(c.get('sql'))), 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/admin/job-limits',
      summary: 'Change ceilings on job limits (fields not given are kept)',
      security,
      middleware: [allow('operate')],
      request: {
        body: {
          content: { 'application/json': { schema: JobLimitCeilingsChangeSchema } },
          required: true,
        },
      },
      responses: { 200: jsonResponse(JobLimitCeilingsSchema, 'The ceilings now'), ...problems },
    }),
    async (c) => {
      const p = c.get('principal')
      const change = c.req.valid('json')
      const now = await settingsSetJobLimits(
        c.get('sql'),
        change.ceilings ?? {},
        change.network_allowed,
      )
      logger.warn({ ...shown(now), actor: p.sub }, 'api: job limit ceilings set')
      return c.json(shown(now), 200)
    },
  )
}
