#!/usr/bin/env node
/**
 * @module The pgsched CLI on Node: start | api | scheduler | worker | migrate | token | sql-url.
 * Reads the environment, resolves config, connects, starts roles and wires shutdown.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'

import { createAdaptorServer } from '@hono/node-server'
import pino from 'pino'

import { mintToken } from '../api/tokens.ts'
import { DATA_DIR_DEFAULT, type PgschedConfig, resolveConfig } from '../core/config.ts'
import { PgschedError } from '../core/errors.ts'
import { ROLES, type Role } from '../core/types.ts'
import { createSql } from '../db/client.ts'
import { serveMetrics, startTelemetry } from '../telemetry/node-sdk.ts'
import { activeTraceIds } from '../telemetry/tracing.ts'
import { Worker } from '../worker/index.ts'
import { sandboxSettingsFromConfig } from '../worker/sandbox.ts'
import { loadTasksFolder } from '../worker/tasks.ts'
import { type Database, jwtSecret, migrateAll, openDatabase, sqlUrl } from './bootstrap.ts'
import { answerClientErrors } from './client-errors.ts'
import { apiFor, schedulerFor, tokenVerifierFor } from './wiring.ts'

const USAGE = `usage: pgsched <command> [--help]

commands:
  start       the API, the scheduler and a worker in one process
  api         the HTTP API only
  scheduler   the scheduler only (one process leads at a time)
  worker      a worker only
  migrate     apply the migrations and exit
  token       mint an API token: token --sub NAME --role ROLE [--role ROLE] [--ttl SECONDS]
  sql-url     print the database URL, password included (psql "$(npx pgsched sql-url)")
  help        this text; pgsched <command> --help tells about one command

Without DATABASE_URL, pgsched runs an embedded PostgreSQL server, its data in .pgsched/
(PGSCHED_DATA_DIR). Other settings are environment variables too: see README.md.`

const EMBEDDED = `Without DATABASE_URL it first starts an embedded PostgreSQL server (port
PGSCHED_EMBEDDED_PG_PORT, default 54329), its data in PGSCHED_DATA_DIR (default .pgsched), and
applies the migrations.`

/** Each command's --help. */
const HELP = {
  start: `usage: pgsched start

Runs the API, the scheduler and a worker in one process. ${EMBEDDED}
The API listens on PORT (default 8080) of PGSCHED_HOST: by default 127.0.0.1 with the embedded
database, all interfaces with DATABASE_URL. At the first start of a data folder it prints an
admin token. Stop it with Ctrl-C or SIGTERM.`,
  api: `usage: pgsched api

Runs the HTTP API only (PORT, default 8080; PGSCHED_HOST). Run as many as you like.
${EMBEDDED}`,
  scheduler: `usage: pgsched scheduler

Runs the scheduler only: one scheduler process leads (fires cron ticks, rescues the runs of dead
workers); the others wait to take over. ${EMBEDDED}`,
  worker: `usage: pgsched worker

Runs a worker only: it executes runs, PGSCHED_WORKER_CONCURRENCY (default 10) at a time, with
the task handlers in PGSCHED_TASKS_DIR (default tasks). ${EMBEDDED}`,
  migrate: `usage: pgsched migrate

Applies the migrations (Graphile Worker's, then pgsched's) to DATABASE_URL and exits.
${EMBEDDED}`,
  token: `usage: pgsched token --sub NAME --role ROLE [--role ROLE] [--ttl SECONDS]

Prints an HS256 API token for NAME with the roles given (${ROLES.join(', ')}), valid for SECONDS
(default 86400, one day). It is signed with PGSCHED_JWT_SECRET; without it and without
DATABASE_URL, with the secret pgsched start keeps in the data folder (PGSCHED_DATA_DIR, default
.pgsched), so run it from the project folder. It never makes a secret up, and says on stderr which
one it used.

  export TOKEN=$(npx pgsched token --sub admin --role admin)`,
  'sql-url': `usage: pgsched sql-url

Prints the URL of the embedded database, superuser password included: it is a secret, keep it
out of logs and shared screens. It reads the password in the data folder (PGSCHED_DATA_DIR) and
the port of the server running there (else PGSCHED_EMBEDDED_PG_PORT, default 54329); it starts
nothing (pgsched start runs the server). With DATABASE_URL set, prints DATABASE_URL.

  psql "$(npx pgsched sql-url)"`,
} as const

type Command = keyof typeof HELP

const ROLES_OF = {
  start: ['api', 'scheduler', 'worker'],
  api: ['api'],
  scheduler: ['scheduler'],
  worker: ['worker'],
  migrate: [],
} satisfies Record<string, string[]>

const isCommand = (s: string | undefined): s is Command => s !== undefined && Object.hasOwn(HELP, s)
const isHelp = (s: string | undefined) => s === '--help' || s === '-h' || s === 'help'

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  if (isHelp(command)) return void console.log(isCommand(rest[0]) ? HELP[rest[0]] : USAGE)
  if (!isCommand(command)) {
    console.error(USAGE)
    if (command !== undefined) console.error(`\npgsched: unknown command '${command}'`)
    process.exitCode = 2
    return
  }
  if (rest.some((a) => a === '--help' || a === '-h')) return void console.log(HELP[command])
  const config = resolveConfig(process.env)
  if (command === 'token') return printToken(config, rest)
  if (command === 'sql-url') {
    noArguments(command, rest)
    return void console.log(sqlUrl(config))
  }
  noArguments(command, rest)
  return run(command, config)
}

function noArguments(command: Command, args: string[]): void {
  if (args.length > 0) {
    throw new PgschedError(
      'validation',
      `${command} takes no arguments, got '${args[0]}' (see pgsched ${command} --help)`,
    )
  }
}

async function run(command: keyof typeof ROLES_OF, config: PgschedConfig): Promise<void> {
  const logger = pino({
    level: config.logLevel,
    redact: ['*.password', '*.secret', '*.token'],
    // A line logged inside a span names it, so logs and traces join up in the backend.
    mixin: () => activeTraceIds() ?? {},
  })
  const roles: string[] = ROLES_OF[command]
  const cleanups: (() => Promise<unknown>)[] = []
  const shutdown = async (signal: string) => {
    logger.info({ signal }, 'pgsched: shutting down')
    for (const c of cleanups.reverse())
      await c().catch((e) => logger.error({ err: e }, 'pgsched: shutdown step failed'))
    process.exit(0)
  }
  process.once('SIGTERM', () => void shutdown('SIGTERM'))
  process.once('SIGINT', () => void shutdown('SIGINT'))

  const db = await openDatabase(config, (line) => console.log(`pgsched: ${line}`))
  cleanups.push(() => db.stop())
  if (db.embedded) {
    console.log(
      `pgsched: embedded PostgreSQL on port ${config.embeddedPgPort}, data in ${db.dataDir} (psql "$(npx pgsched sql-url)")`,
    )
  }
  const applied = await migrateAll(db.url)
  logger.info({ applied }, 'pgsched: migrations applied')
  if (command === 'migrate') return shutdown('done')
  const telemetry = startTelemetry()
  cleanups.push(() => telemetry.shutdown())
  // The API serves /metrics itself; a process without one gets its own port.
  const metricsPort = config.metricsPort ?? (roles.includes('api') ? undefined : 0)
  if (metricsPort !== undefined) {
    const metrics = await serveMetrics(telemetry, config.metricsHost, metricsPort).catch((e) => {
      throw (e as NodeJS.ErrnoException).code === 'EADDRINUSE'
        ? new PgschedError(
            'config',
            `port ${metricsPort} of ${config.metricsHost} is in use: set PGSCHED_METRICS_PORT to a free port`,
            { cause: e },
          )
        : e
    })
    cleanups.push(() => metrics.close())
    console.log(`pgsched: metrics on ${metrics.url}`)
  }
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
      sandbox: sandboxSettingsFromConfig(config),
      traceLinkMode: config.traceLinkMode,
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
    const scheduler = schedulerFor(config, { sql, url: db.url, logger, holder })
    scheduler.start()
    cleanups.push(() => scheduler.stop())
    logger.info({ holder }, 'pgsched: scheduler started')
  }
  if (roles.includes('api')) {
    const secret = jwtSecret(config, db, { create: true })
    const app = apiFor(config, {
      sql,
      verifyToken: tokenVerifierFor(config, secret?.value),
      logger,
      metrics: () => telemetry.metricsText(),
    })
    // A dev server (embedded database) is for this machine unless PGSCHED_HOST says otherwise.
    const host = config.host ?? (db.embedded ? '127.0.0.1' : undefined)
    const server = createAdaptorServer({ fetch: app.fetch, hostname: host })
    answerClientErrors(server as Server)
    await new Promise<void>((listening, fail) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        fail(
          e.code === 'EADDRINUSE'
            ? new PgschedError(
                'config',
                `port ${config.port} of ${host ?? 'all interfaces'} is in use: set PORT to a free port`,
                { cause: e },
              )
            : e,
        ),
      )
      server.listen(config.port, host, () => listening())
    })
    cleanups.push(() => new Promise((done) => server.close(done)))
    console.log(`pgsched API listening on ${describeAddress(server.address() as AddressInfo)}`)
    if (db.embedded) await printAdminToken(secret, db)
  }
}

// http://127.0.0.1:8080, or for a wildcard address a URL that works here and what it listens on.
function describeAddress({ address, family, port }: AddressInfo): string {
  if (address === '::' || address === '0.0.0.0') {
    return `http://localhost:${port} (all interfaces, ${address})`
  }
  return `http://${family === 'IPv6' ? `[${address}]` : address}:${port}`
}

// A token at the first start only (when the secret was just made): a token printed at every
// start would leave a new 30-day credential in every log. Later, how to get one.
async function printAdminToken(secret: Awaited<ReturnType<typeof jwtSecret>>, db: Database) {
  if (!secret) return
  if (secret.created) {
    const token = await mintToken(secret.value, 'admin', ['admin'], 30 * 24 * 3600)
    console.log(`admin token (30 days; printed at the first start only):\n  export TOKEN=${token}`)
    return
  }
  const where = db.dataDir === resolve(DATA_DIR_DEFAULT) ? '' : `PGSCHED_DATA_DIR=${db.dataDir} `
  console.log(`admin token: export TOKEN=$(${where}npx pgsched token --sub admin --role admin)`)
}

async function printToken(config: PgschedConfig, args: string[]): Promise<void> {
  let values: { sub?: string; role?: string[]; ttl?: string }
  try {
    ;({ values } = parseArgs({
      args,
      options: {
        sub: { type: 'string' },
        role: { type: 'string', multiple: true },
        ttl: { type: 'string', default: '86400' },
      },
    }))
  } catch (e) {
    throw new PgschedError('validation', `${(e as Error).message} (see pgsched token --help)`, {
      cause: e,
    })
  }
  const roles = values.role ?? []
  const bad = roles.filter((r) => !(ROLES as readonly string[]).includes(r))
  const problem = !values.sub
    ? '--sub is required: the name the token stands for'
    : roles.length === 0
      ? `at least one --role is required: ${ROLES.join(', ')}`
      : bad.length > 0
        ? `unknown role '${bad[0]}': the roles are ${ROLES.join(', ')}`
        : !/^[1-9]\d{0,9}$/.test(values.ttl!)
          ? `--ttl must be a positive whole number of seconds (at most 9999999999), got '${values.ttl}'`
          : undefined
  if (problem) throw new PgschedError('validation', `${problem} (see pgsched token --help)`)
  const secret = jwtSecret(config, { embedded: !config.databaseUrl }, { create: false })
  if (!secret) {
    throw new PgschedError(
      'config',
      'token needs PGSCHED_JWT_SECRET: tokens for a JWKS provider are minted by that provider',
    )
  }
  const ttl = Number(values.ttl)
  console.log(await mintToken(secret.value, values.sub!, roles as Role[], ttl))
  console.error(
    secret.source === 'PGSCHED_JWT_SECRET'
      ? 'pgsched: signed with PGSCHED_JWT_SECRET'
      : `pgsched: signed with the secret in ${secret.source}`,
  )
}

// One line for anything thrown, never "undefined": an error's message, or for one without (an
// AggregateError from a connection, a rejection with nothing), what it carries.
function describeError(e: unknown): string {
  if (e instanceof AggregateError && !e.message && e.errors.length > 0) {
    return e.errors.map(describeError).join('; ')
  }
  if (e instanceof Error) {
    if (e.message) return e.message
    if (e.cause !== undefined) return describeError(e.cause)
    const code = (e as NodeJS.ErrnoException).code
    return code ? `${e.name} ${code}` : `${e.name} without a message`
  }
  if (e === undefined || e === null)
    return 'stopped by an error that says nothing (see the log above)'
  return typeof e === 'string' ? e : JSON.stringify(e)
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`pgsched: ${describeError(e)}`)
  process.exit(e instanceof PgschedError && e.code === 'validation' ? 2 : 1)
})
