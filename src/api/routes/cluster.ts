/** @module Routes that show the cluster: the worker processes and the scheduler leadership. */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi'
import { z } from 'zod'

import { leaderStatus } from '../../db/queries/leader.ts'
import { workerList } from '../../db/queries/workers.ts'
import { type AppEnv, allow } from '../middleware/auth.ts'
import { baseProblems, jsonResponse, security } from '../openapi.ts'
import { SchedulerSchema, WorkerSchema } from '../schemas.ts'
import { jsonify } from '../serialize.ts'

/** Registers GET /v1/workers and GET /v1/scheduler. */
export function registerClusterRoutes(app: OpenAPIHono<AppEnv>): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/workers',
      summary:
        'List worker processes: live ones first, then those stopped or declared dead in the last day',
      security,
      middleware: [allow('read')],
      responses: {
        200: jsonResponse(z.object({ items: z.array(WorkerSchema) }), 'The workers'),
        ...baseProblems,
      },
    }),
    async (c) => {
      return c.json({ items: (await workerList(c.get('sql'))).map(jsonify) }, 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/scheduler',
      summary: 'Show the scheduler leader, its term, and when it took over',
      security,
      middleware: [allow('read')],
      responses: {
        200: jsonResponse(SchedulerSchema, 'The leadership'),
        ...baseProblems,
      },
    }),
    async (c) => {
      return c.json(jsonify(await leaderStatus(c.get('sql'))), 200)
    },
  )
}
