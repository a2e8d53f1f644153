/** @module Admin routes: read and set graceful degradation. */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi'

import type { Logger } from '../../core/types.ts'
import type { Sql } from '../../db/client.ts'
import { degradationEvents, degradationGet, degradationSet } from '../../db/queries/degradation.ts'
import type { LoadShedding } from '../load-shedding.ts'
import { type AppEnv, allow } from '../middleware/auth.ts'
import { jsonResponse, problemResponses, security } from '../openapi.ts'
import { DegradationChangeSchema, DegradationSchema } from '../schemas.ts'
import { jsonify } from '../serialize.ts'

const problems = problemResponses('resource', 'never')

async function state(sql: Sql) {
  const [d, events] = await Promise.all([degradationGet(sql), degradationEvents(sql, 20)])
  return { ...jsonify(d), events: events.map(jsonify) }
}

/** Registers GET and PUT /v1/admin/degradation. */
export function registerAdminRoutes(
  app: OpenAPIHono<AppEnv>,
  shed: LoadShedding,
  logger: Logger,
): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/admin/degradation',
      summary: 'The degradation level, how it is set, the queue depth and the latest changes',
      security,
      middleware: [allow('operate')],
      responses: { 200: jsonResponse(DegradationSchema, 'The state'), ...problems },
    }),
    async (c) => {
      return c.json(await state(c.get('sql')), 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/admin/degradation',
      summary:
        'Set a manual level (0-4) or the automatic mode, and optionally the queue depth thresholds',
      security,
      middleware: [allow('operate')],
      request: {
        body: {
          content: { 'application/json': { schema: DegradationChangeSchema } },
          required: true,
        },
      },
      responses: { 200: jsonResponse(DegradationSchema, 'The new state'), ...problems },
    }),
    async (c) => {
      const p = c.get('principal')
      const change = c.req.valid('json')
      const sql = c.get('sql')
      const d = await degradationSet(sql, change, p.sub)
      shed.forget()
      logger.warn(
        { mode: d.mode, level: d.level, cause: d.cause, actor: p.sub },
        'api: degradation set',
      )
      return c.json(await state(sql), 200)
    },
  )
}
