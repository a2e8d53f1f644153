/** @module Routes of runs: read one with its attempts, replay a dead one, list dead letters. */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi'

import { PgschedError } from '../../core/errors.ts'
import type { Principal } from '../../core/types.ts'
import type { Sql } from '../../db/client.ts'
import { runAttempts, runGet, runListDead, runRetryDead } from '../../db/queries/runs.ts'
import type { LoadShedding } from '../load-shedding.ts'
import { type AppEnv, allow, ownerScope, requireVisible } from '../middleware/auth.ts'
import { cursorId, jsonResponse, pageOf, problemResponses, security } from '../openapi.ts'
import { IdParamSchema, PageQuerySchema, RunDetailSchema, RunSchema } from '../schemas.ts'
import { jsonify, page } from '../serialize.ts'

const problems = problemResponses('run', 'The run is not dead')

async function runDetail(sql: Sql, p: Principal, id: number) {
  const { owner: _owner, ...run } = requireVisible(p, 'run', id, await runGet(sql, id))
  const attempts = await runAttempts(sql, id)
  return { ...jsonify(run), attempts: attempts.map(jsonify) }
}

/** Registers the run routes. */
export function registerRunRoutes(app: OpenAPIHono<AppEnv>, shed: LoadShedding): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/runs/{id}',
      summary: 'Read a run with its attempts',
      security,
      middleware: [allow('read')],
      request: { params: IdParamSchema },
      responses: {
        200: jsonResponse(RunDetailSchema, 'The run'),
        ...problems,
      },
    }),
    async (c) => {
      const p = c.get('principal')
      return c.json(await runDetail(c.get('sql'), p, c.req.valid('param').id), 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/runs/{id}/retry',
      summary: 'Replay a dead-lettered run: it gets one more attempt, now',
      security,
      middleware: [allow('write')],
      request: { params: IdParamSchema },
      responses: {
        200: jsonResponse(RunDetailSchema, 'The replayed run'),
        ...problems,
      },
    }),
    async (c) => {
      const p = c.get('principal')
      const { id } = c.req.valid('param')
      const run = await c.get('sql').begin(async (tx) => {
        const run = requireVisible(p, 'run', id, await runGet(tx, id))
        if (!(await runRetryDead(tx, id))) {
          throw new PgschedError(
            'conflict',
            `run ${id} is ${run.status}; only a dead run can be replayed`,
          )
        }
        return runDetail(tx, p, id)
      })
      return c.json(run, 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/dead-letters',
      summary: 'List dead-lettered runs (retries exhausted), newest first',
      security,
      middleware: [allow('read')],
      request: { query: PageQuerySchema },
      responses: {
        200: jsonResponse(pageOf(RunSchema), 'A page of dead runs'),
        ...problems,
      },
    }),
    async (c) => {
      const p = c.get('principal')
      const q = c.req.valid('query')
      const bounds = await shed.history(c, q.limit)
      const rows = await runListDead(c.get('sql'), {
        owner: ownerScope(p),
        before: cursorId(q.cursor),
        ...bounds,
      })
      return c.json(
        page(rows, bounds.limit, (r) => r.run_id),
        200,
      )
    },
  )
}
