/** @module Health routes, without auth: /healthz (alive) and /readyz (database and schema ready). */
import type { OpenAPIHono } from '@hono/zod-openapi'

import type { SqlPool } from '../../db/client.ts'
import { latestMigrationVersion } from '../../db/migrator.ts'
import { migrationsLatestApplied } from '../../db/queries/migrations.ts'
import type { AppEnv } from '../middleware/auth.ts'

/** Registers /healthz and /readyz. */
export function registerHealthRoutes(app: OpenAPIHono<AppEnv>, sql: SqlPool): void {
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/readyz', async (c) => {
    const want = latestMigrationVersion()
    try {
      const have = await migrationsLatestApplied(sql)
      if (have < want)
        return c.json(
          { status: 'unready', reason: `schema at migration ${have}, need ${want}` },
          503,
        )
      return c.json({ status: 'ready', migration: have })
    } catch {
      return c.json({ status: 'unready', reason: 'database unreachable' }, 503)
    }
  })
}
