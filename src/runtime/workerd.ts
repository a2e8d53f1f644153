/**
 * @module The pgsched API and scheduler on Cloudflare workerd (Workers), with `nodejs_compat`
 * (postgres.js' Workers build imports node:events, node:buffer and node:stream). Configured by
 * wrangler.jsonc at the top of the repository:
 *
 *   npx wrangler dev --local      (or `npx wrangler deploy`)
 *
 * - The API is the Worker's fetch handler, built once per isolate. A socket belongs to the request
 *   that opened it, so each request gets a pool of its own, ended after its response: through
 *   Hyperdrive when the HYPERDRIVE binding exists (Hyperdrive pools the connections), else
 *   straight to DATABASE_URL. The API needs no session feature (no advisory lock, no LISTEN), so
 *   Hyperdrive's transaction pooling suits it.
 * - The scheduler lives in one Durable Object, SchedulerHost, which keeps a Durable Object's I/O
 *   across its own events and is kept awake by an alarm every few seconds. It connects straight
 *   to DATABASE_URL, never through Hyperdrive: leadership is a session advisory lock, which a
 *   transaction pool would hand to other clients, and the ticker is woken by LISTEN. Election is unchanged: the lock decides, the
 *   object only hosts a campaigner, beside any Node or Deno scheduler.
 * - A Cron Trigger (every minute) wakes the object and fires due ticks itself, so schedules keep
 *   firing, at one-minute granularity, if the object is gone (every tick write is safe to repeat).
 * - Workers that execute jobs stay on Node: commands need child processes and a sandbox.
 */
import { DurableObject } from 'cloudflare:workers'

import type { PerRequestSql } from '../api/app.ts'
import { type PgschedConfig, resolveConfig } from '../core/config.ts'
import { createSql } from '../db/client.ts'
import type { Scheduler } from '../scheduler/index.ts'
import { Ticker } from '../scheduler/ticker.ts'
import { apiFor, createConsoleLogger, schedulerFor, tokenVerifierFor } from './wiring.ts'

/** The Worker's bindings (wrangler.jsonc): PGSCHED_* settings and secrets are plain strings. */
interface Env {
  DATABASE_URL?: string
  /** Present when wrangler.jsonc binds a Hyperdrive configuration (see there). */
  HYPERDRIVE?: Hyperdrive
  SCHEDULER: DurableObjectNamespace<SchedulerHost>
  [setting: string]: unknown
}

/** How often the scheduler's object wakes itself: it is evicted after about 10 s without events. */
const ALARM_EVERY_MS = 5_000
/** The one scheduler object: a Worker's requests, and its Cron Trigger, all reach the same one. */
const SCHEDULER_OBJECT = 'scheduler'

const logger = createConsoleLogger()

function configOf(env: Env): PgschedConfig {
  const strings = Object.entries(env).filter((e): e is [string, string] => typeof e[1] === 'string')
  return resolveConfig(Object.fromEntries(strings))
}

/** The direct database URL: the scheduler's, and the API's without Hyperdrive. */
function directUrl(config: PgschedConfig): string {
  if (!config.databaseUrl) throw new Error('set DATABASE_URL (a secret or a var in wrangler.jsonc)')
  return config.databaseUrl
}

function buildApi(env: Env) {
  const config = configOf(env)
  const url = env.HYPERDRIVE?.connectionString ?? directUrl(config)
  const sql: PerRequestSql = {
    // Connections open lazily, so a request that runs one statement opens one connection.
    perRequest: () => createSql(url, { applicationName: 'pgsched-workerd', max: 4 }),
  }
  return apiFor(config, { sql, verifyToken: tokenVerifierFor(config), logger })
}

let api: ReturnType<typeof buildApi> | undefined
let woken = false

function schedulerObject(env: Env) {
  return env.SCHEDULER.get(env.SCHEDULER.idFromName(SCHEDULER_OBJECT))
}

export default {
  fetch(request: Request, env: Env, ctx: ExecutionContext): Response | Promise<Response> {
    api ??= buildApi(env)
    if (!woken) {
      // Once per isolate: the first request after a deploy starts the scheduler's object.
      woken = true
      ctx.waitUntil(
        schedulerObject(env)
          .fetch('https://scheduler/wake')
          .catch((err) => logger.error({ err }, 'pgsched: could not wake the scheduler object')),
      )
    }
    return api.fetch(request, env, ctx)
  },

  async scheduled(_event: ScheduledController, env: Env, ctx: ExecutionContext): Promise<void> {
    ctx.waitUntil(schedulerObject(env).fetch('https://scheduler/wake'))
    const sql = createSql(directUrl(configOf(env)), {
      applicationName: 'pgsched-workerd-cron',
      max: 1,
    })
    try {
      // One pass of the ticker, leading or not (unfenced: every tick write is safe to repeat).
      await new Ticker({ sql, logger }).runOnce()
    } finally {
      await sql.end({ timeout: 5 })
    }
  },
} satisfies ExportedHandler<Env>

/** The scheduler's host: campaigns while awake; an alarm keeps it awake. */
export class SchedulerHost extends DurableObject<Env> {
  #scheduler: Scheduler | undefined
  readonly #holder = `workerd:${crypto.randomUUID().slice(0, 8)}`

  override async fetch(): Promise<Response> {
    await this.#awake()
    return Response.json({ holder: this.#holder, leading: this.#scheduler?.isLeader ?? false })
  }

  override async alarm(): Promise<void> {
    await this.#awake()
  }

  async #awake(): Promise<void> {
    if (!this.#scheduler) {
      const config = configOf(this.env)
      const url = directUrl(config)
      const sql = createSql(url, { applicationName: `pgsched-${this.#holder}` })
      this.#scheduler = schedulerFor(config, { sql, url, logger, holder: this.#holder })
      this.#scheduler.start()
      logger.info({ holder: this.#holder }, 'pgsched: scheduler started')
    }
    const next = await this.ctx.storage.getAlarm()
    if (next === null || next < Date.now()) {
      await this.ctx.storage.setAlarm(Date.now() + ALARM_EVERY_MS)
    }
  }
}
