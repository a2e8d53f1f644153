/** @module Health routes, without auth: /healthz (alive) and /readyz (database and schema ready). */
import type { OpenAPIHono } from '@hono/zod-openapi'

import { latestMigrationVersion } from '../../db/migrator.ts'
import { migrationsLatestApplied } from '../../db/queries/migrations.ts'
import type { AppEnv } from '../middleware/auth.ts'

/**
 * How long /readyz waits for the database. Past it the database counts as away (503): a probe
 * must get an answer while the database cannot be reached, even through a connection stuck on a
 * dead path (a partition, a primary gone without a word) that would hang until TCP gives up.
 */
export const READY_TIMEOUT_MS = 2000

/** Registers /healthz and /readyz. */
export function registerHealthRoutes(app: OpenAPIHono<AppEnv>): void {
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/readyz', async (c) => {
    const want = latestMigrationVersion()
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      const have = await Promise.race([
        migrationsLatestApplied(c.get('sql')),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('no answer')), READY_TIMEOUT_MS)
        }),
      ])
      if (have < want)
        return c.json(
          { status: 'unready', reason: `schema at migration ${have}, need ${want}` },
          503,
        )
      return c.json({ status: 'ready', migration: have })
    } catch {
      return c.json({ status: 'unready', reason: 'database unreachable' }, 503)
    } finally {
      if (timer !== undefined) clearTimeout(timer)
    }
  })
}
