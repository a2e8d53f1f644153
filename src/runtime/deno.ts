/**
 * @module The pgsched API and scheduler on Deno: the portable layers, unchanged. Workers need
 * Node (Graphile Worker, child processes); run them with `npx pgsched worker`.
 *
 *   deno run --allow-net --allow-env --allow-read --node-modules-dir=manual src/runtime/deno.ts
 */
import { createApp } from '../api/app.ts'
import { createTokenVerifier } from '../api/tokens.ts'
import { resolveConfig } from '../core/config.ts'
import type { Logger } from '../core/types.ts'
import { createSql } from '../db/client.ts'
import { Scheduler } from '../scheduler/index.ts'

declare const Deno: {
  env: { toObject(): Record<string, string> }
  serve(
    o: { port: number; onListen?: (a: { port: number }) => void },
    h: (r: Request) => Response | Promise<Response>,
  ): {
    shutdown(): Promise<void>
  }
  addSignalListener(signal: 'SIGTERM' | 'SIGINT', fn: () => void): void
  exit(code: number): never
}

const config = resolveConfig(Deno.env.toObject())
if (!config.databaseUrl) throw new Error('set DATABASE_URL: embedded PostgreSQL is for Node only')
const log = (level: string) => (obj: object | string, msg?: string) =>
  console.log(
    JSON.stringify({ level, ...(typeof obj === 'string' ? { msg: obj } : { ...obj, msg }) }),
  )
const logger: Logger = {
  debug: () => {},
  info: log('info'),
  warn: log('warn'),
  error: log('error'),
}

const sql = createSql(config.databaseUrl, { applicationName: 'pgsched-deno' })
const verifyToken = createTokenVerifier({
  secret: config.jwtSecret,
  jwksUrl: config.jwksUrl,
  issuer: config.jwtIssuer,
  audience: config.jwtAudience,
})
const app = createApp({ sql, verifyToken, logger, rateLimitPerMinute: config.rateLimitPerMinute })
const scheduler = new Scheduler({
  sql,
  url: config.databaseUrl,
  logger,
  holder: 'deno',
  leaderPollMs: config.leaderPollSeconds * 1000,
  heartbeatTimeoutMs: config.heartbeatTimeoutSeconds * 1000,
  historyRetentionDays: config.historyRetentionDays,
})
scheduler.start()
const server = Deno.serve(
  {
    port: config.port,
    onListen: ({ port }) => console.log(`pgsched API (Deno) listening on http://localhost:${port}`),
  },
  app.fetch,
)
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  Deno.addSignalListener(signal, async () => {
    await server.shutdown()
    await scheduler.stop()
    await sql.end({ timeout: 5 })
    Deno.exit(0)
  })
}
