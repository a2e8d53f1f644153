#!/usr/bin/env node
/**
 * @module The pgsched CLI on Node: start | api | scheduler | worker | migrate | token.
 * Reads the environment, resolves config, connects, starts roles and wires shutdown.
 */
import { hostname } from 'node:os'
import { parseArgs } from 'node:util'

import { serve } from '@hono/node-server'
import pino from 'pino'

import { createApp } from '../api/app.ts'
import { createTokenVerifier, mintToken } from '../api/tokens.ts'
import { resolveConfig } from '../core/config.ts'
import { ROLES, type Role } from '../core/types.ts'
import { createSql } from '../db/client.ts'
import { Scheduler } from '../scheduler/index.ts'
import { startTelemetry } from '../telemetry/node-sdk.ts'
import { Worker } from '../worker/index.ts'
import { loadTasksFolder } from '../worker/tasks.ts'
import { jwtSecret, migrateAll, openDatabase } from './bootstrap.ts'

const USAGE = `usage: pgsched <command>
  start        api + scheduler + worker in one process (embedded PostgreSQL without DATABASE_URL)
  api          the HTTP API only
  scheduler    the scheduler only (one process leads)
  worker       a worker only
  migrate      apply migrations and exit
  token --sub NAME --role ROLE [--role ROLE] [--ttl SECONDS]   mint a token`

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  const config = resolveConfig(process.env)
  const logger = pino({ level: config.logLevel, redact: ['*.password', '*.secret', '*.token'] })
  if (command === 'token') return printToken(config, rest)
  const roles = {
    start: ['api', 'scheduler', 'worker'],
    api: ['api'],
    scheduler: ['scheduler'],
    worker: ['worker'],
    migrate: [],
  }[command as 'start']
  if (!roles) {
    console.error(USAGE)
    process.exit(2)
  }
  const db = await openDatabase(config)
  const cleanups: (() => Promise<unknown>)[] = [() => db.stop()]
  const shutdown = async (signal: string) => {
    logger.info({ signal }, 'pgsched: shutting down')
    for (const c of cleanups.reverse())
      await c().catch((e) => logger.error({ err: e }, 'pgsched: shutdown step failed'))
    process.exit(0)
  }
  process.once('SIGTERM', () => void shutdown('SIGTERM'))
  process.once('SIGINT', () => void shutdown('SIGINT'))

  const applied = await migrateAll(db.url)
  logger.info({ applied }, 'pgsched: migrations applied')
  if (command === 'migrate') return shutdown('done')
  cleanups.push(startTelemetry())
  const sql = createSql(db.url, { max: 10, applicationName: `pgsched-${command}` })
  cleanups.push(() => sql.end({ timeout: 5 }))

  if (roles.includes('worker')) {
    const tasks = await loadTasksFolder(config.tasksDir)
    const worker = new Worker({
      sql,
      connectionString: db.url,
      concurrency: config.workerConcurrency,
      killGraceMs: config.killGraceSeconds * 1000,
      heartbeatIntervalMs: config.heartbeatIntervalSeconds * 1000,
      shutdownGraceMs: config.shutdownGraceSeconds * 1000,
      tasks,
      logger,
      // Exit at once (a graceful stop needs the database, which is likely away): the supervisor
      // restarts the process, and the leader rescues its runs when its heartbeats stop.
      onExecutorLost: () => process.exit(1),
    })
    await worker.start()
    cleanups.push(() => worker.stop())
    logger.info({ worker: worker.name, tasks: Object.keys(tasks) }, 'pgsched: worker started')
  }
  if (roles.includes('scheduler')) {
    const holder = `${hostname()}:${process.pid}`
    const scheduler = new Scheduler({
      sql,
      url: db.url,
      logger,
      holder,
      leaderPollMs: config.leaderPollSeconds * 1000,
      heartbeatTimeoutMs: config.heartbeatTimeoutSeconds * 1000,
    })
    scheduler.start()
    cleanups.push(() => scheduler.stop())
    logger.info({ holder }, 'pgsched: scheduler started')
  }
  if (roles.includes('api')) {
    const secret = jwtSecret(config, db)
    const verifyToken = createTokenVerifier({
      secret,
      jwksUrl: config.jwksUrl,
      issuer: config.jwtIssuer,
      audience: config.jwtAudience,
    })
    const app = createApp({
      sql,
      verifyToken,
      logger,
      rateLimitPerMinute: config.rateLimitPerMinute,
    })
    const server = serve({ fetch: app.fetch, port: config.port })
    cleanups.push(() => new Promise((done) => server.close(done)))
    console.log(`pgsched API listening on http://localhost:${config.port}`)
    if (db.embedded && secret) {
      const token = await mintToken(secret, 'admin', ['admin'], 30 * 24 * 3600)
      console.log(`dev admin token (30 days):\n  export TOKEN=${token}`)
    }
  }
}

async function printToken(config: ReturnType<typeof resolveConfig>, args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      sub: { type: 'string' },
      role: { type: 'string', multiple: true },
      ttl: { type: 'string', default: '86400' },
    },
  })
  const roles = values.role ?? []
  const bad = roles.filter((r) => !(ROLES as readonly string[]).includes(r))
  const ttl = Number(values.ttl)
  if (!values.sub || roles.length === 0 || bad.length > 0 || !Number.isInteger(ttl) || ttl <= 0) {
    console.error(
      `usage: pgsched token --sub NAME --role ${ROLES.join('|')} [--role …] [--ttl SECONDS]`,
    )
    if (bad.length) console.error(`unknown role: ${bad.join(', ')}`)
    process.exit(2)
  }
  const secret = jwtSecret(config, { embedded: !config.databaseUrl })
  if (!secret)
    throw new Error('token needs PGSCHED_JWT_SECRET (tokens from a JWKS provider are minted there)')
  console.log(await mintToken(secret, values.sub, roles as Role[], ttl))
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`pgsched: ${e instanceof Error ? e.message : String(e)}`)
  process.exit(1)
})
