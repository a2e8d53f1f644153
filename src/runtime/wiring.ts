/**
 * @module The portable wiring of the API and the scheduler: config → pool → token verifier → app
 * → scheduler. A runtime entry (deno.ts, bun.ts) is this plus its server and its signals; the
 * Node CLI builds its own pool (shared with a worker) and uses the builders below.
 */
import { type AppDeps, createApp } from '../api/app.ts'
import { createTokenVerifier, type TokenVerifier } from '../api/tokens.ts'
import type { PgschedConfig } from '../core/config.ts'
import type { Logger } from '../core/types.ts'
import { createSql, type SqlPool } from '../db/client.ts'
import { Scheduler } from '../scheduler/index.ts'

/**
 * One JSON line a log record on stdout, for runtimes without pino. An Error is written with its
 * name, message and cause (JSON.stringify alone writes `{}`), so a failure never logs as nothing.
 */
export function createConsoleLogger(): Logger {
  const errors = (_key: string, v: unknown) =>
    v instanceof Error ? { name: v.name, message: v.message, stack: v.stack, cause: v.cause } : v
  const log = (level: string) => (obj: object | string, msg?: string) =>
    console.log(
      JSON.stringify(
        { level, time: Date.now(), ...(typeof obj === 'string' ? { msg: obj } : { ...obj, msg }) },
        errors,
      ),
    )
  return { debug: () => {}, info: log('info'), warn: log('warn'), error: log('error') }
}

/** The token verifier the config asks for; `secret` overrides PGSCHED_JWT_SECRET (the CLI's own). */
export function tokenVerifierFor(
  config: PgschedConfig,
  secret: string | undefined = config.jwtSecret,
): TokenVerifier {
  return createTokenVerifier({
    secret,
    jwksUrl: config.jwksUrl,
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
  })
}

/** The API on `sql` with the config's settings. */
export function apiFor(
  config: PgschedConfig,
  deps: Pick<AppDeps, 'sql' | 'verifyToken' | 'logger' | 'metrics'>,
): ReturnType<typeof createApp> {
  return createApp({
    ...deps,
    rateLimitPerMinute: config.rateLimitPerMinute,
    jobNetwork: config.jobNetwork,
  })
}

/** A scheduler (not started) on `sql`, its elector connecting to `url`, recorded as `holder`. */
export function schedulerFor(
  config: PgschedConfig,
  o: { sql: SqlPool; url: string; logger: Logger; holder: string },
): Scheduler {
  return new Scheduler({
    ...o,
    leaderPollMs: config.leaderPollSeconds * 1000,
    heartbeatTimeoutMs: config.heartbeatTimeoutSeconds * 1000,
    historyRetentionDays: config.historyRetentionDays,
  })
}

/** The API and a started scheduler on one pool; `stop()` stops the scheduler, then the pool. */
export interface Wired {
  sql: SqlPool
  app: ReturnType<typeof createApp>
  scheduler: Scheduler
  stop(): Promise<void>
}

/**
 * Wires the API and the scheduler on DATABASE_URL: the pool is named `pgsched-<holder>` in
 * pg_stat_activity and the scheduler leads as `holder`. Stop the server first, then `stop()`.
 */
export function wire(config: PgschedConfig, logger: Logger, holder: string): Wired {
  const url = config.databaseUrl
  if (!url) throw new Error('set DATABASE_URL: embedded PostgreSQL is for Node only')
  const sql = createSql(url, { applicationName: `pgsched-${holder}` })
  const app = apiFor(config, { sql, verifyToken: tokenVerifierFor(config), logger })
  const scheduler = schedulerFor(config, { sql, url, logger, holder })
  scheduler.start()
  return {
    sql,
    app,
    scheduler,
    async stop() {
      await scheduler.stop()
      await sql.end({ timeout: 5 })
    },
  }
}
