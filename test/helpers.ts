/** A per-file test bundle: a fresh database cloned from the template, the API, tokens, roles. */
import postgres from 'postgres'
import { inject } from 'vitest'

import { createApp } from '../src/api/app.ts'
import { createTokenVerifier, mintToken } from '../src/api/tokens.ts'
import type { Role } from '../src/core/types.ts'
import { silentLogger } from '../src/core/types.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { Scheduler, type SchedulerOptions } from '../src/scheduler/index.ts'
import { Worker, type WorkerOptions } from '../src/worker/index.ts'
import { withDatabase } from './global-setup.ts'

export { waitFor } from './processes.ts'

/** A hook that counts its calls, to pass as a service's onPass or a worker's onPoll. */
export interface Signal {
  /** The hook: counts one call. */
  fire(): void
  /** Calls so far. */
  readonly count: number
  /** Resolves once `n` more calls have come (counted from now); fails after `timeoutMs`. */
  next(n?: number, timeoutMs?: number, what?: string): Promise<void>
}

/** A new {@link Signal}: wait on a service's passes, not on time [River testsignal]. */
export function signal(): Signal {
  let count = 0
  const waiting = new Set<{ at: number; done: () => void }>()
  return {
    fire() {
      count++
      for (const w of waiting) if (count >= w.at) w.done()
    },
    get count() {
      return count
    },
    next(n = 1, timeoutMs = 10_000, what = `${n} more calls`) {
      return new Promise<void>((resolve, reject) => {
        const w = {
          at: count + n,
          done: () => {
            clearTimeout(timer)
            waiting.delete(w)
            resolve()
          },
        }
        const timer = setTimeout(() => {
          waiting.delete(w)
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
        }, timeoutMs)
        waiting.add(w)
      })
    },
  }
}

/** The HS256 secret tests sign with. */
export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256'

/** What a test file works with. */
export interface TestBundle {
  url: string
  sql: SqlPool
  app: ReturnType<typeof createApp>
  token(sub: string, ...roles: Role[]): Promise<string>
  /** Calls the API in-process: JSON in and out. */
  request(
    method: string,
    path: string,
    o?: { token?: string; body?: unknown; headers?: Record<string, string> },
    // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies by their documented shape
  ): Promise<{ status: number; body: any; text: string; headers: Headers }>
  startWorker(o?: Partial<WorkerOptions>): Promise<Worker>
  startScheduler(o?: Partial<SchedulerOptions>): Scheduler
  /**
   * A connection as a new login role holding only pgsched_submitter, as an application's role
   * would; the role is dropped by close().
   */
  submitterSession(): Promise<{ sql: postgres.Sql; role: string }>
  close(): Promise<void>
}

/** TestBundle.request for any app: calls it in-process, JSON in and out. */
export function requester(app: ReturnType<typeof createApp>): TestBundle['request'] {
  return async (method, path, o = {}) => {
    const headers: Record<string, string> = { ...o.headers }
    if (o.token) headers.authorization = `Bearer ${o.token}`
    if (o.body !== undefined) headers['content-type'] = 'application/json'
    const res = await app.request(path, {
      method,
      headers,
      body:
        o.body === undefined
          ? undefined
          : typeof o.body === 'string'
            ? o.body
            : JSON.stringify(o.body),
    })
    const text = await res.text()
    const json = res.headers.get('content-type')?.includes('json') && text
    return {
      status: res.status,
      body: json ? JSON.parse(text) : null,
      text,
      headers: res.headers,
    }
  }
}

let counter = 0
let schedulers = 0
let roles = 0

/** Options of setup(). */
export interface SetupOptions {
  /** The API's submissions a minute per user. @default 1000 */
  rateLimitPerMinute?: number
  /** What the API's GET /metrics serves; unset: no /metrics. */
  metrics?: () => Promise<string>
}

/** Clones the template into a new database and builds the bundle around it. */
export async function setup(options: SetupOptions = {}): Promise<TestBundle> {
  const base = inject('databaseUrl')
  const name = `pgsched_t_${process.pid}_${Date.now().toString(36)}_${counter++}`
  const admin = createSql(base, { max: 1 })
  await admin`CREATE DATABASE ${admin(name)} TEMPLATE ${admin(inject('templateDatabase'))}`
  const url = withDatabase(base, name)
  const sql = createSql(url, { max: 10 })
  const app = createApp({
    sql,
    verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
    logger: silentLogger,
    rateLimitPerMinute: options.rateLimitPerMinute,
    metrics: options.metrics,
  })
  const stops: (() => Promise<void>)[] = []

  return {
    url,
    sql,
    app,
    token: (sub, ...roles) => mintToken(TEST_SECRET, sub, roles, 3600),
    request: requester(app),
    async startWorker(o = {}) {
      const worker = new Worker({
        sql,
        connectionString: url,
        concurrency: 4,
        killGraceMs: 500,
        tasks: {},
        logger: silentLogger,
        pollIntervalMs: 100,
        ...o,
      })
      await worker.start()
      stops.push(() => worker.stop())
      return worker
    },
    startScheduler(o = {}) {
      const scheduler = new Scheduler({
        sql,
        url,
        logger: silentLogger,
        holder: `test:${++schedulers}`,
        leaderPollMs: 200,
        ...o,
      })
      scheduler.start()
      stops.push(() => scheduler.stop())
      return scheduler
    },
    async submitterSession() {
      const role = `app_${process.pid}_${Date.now().toString(36)}_${roles++}`
      await sql`CREATE ROLE ${sql(role)} LOGIN PASSWORD 'app-password' IN ROLE pgsched_submitter`
      const u = new URL(url)
      u.username = role
      u.password = 'app-password'
      const session = postgres(u.toString(), { max: 1, onnotice: () => {} })
      // Roles live in the whole cluster, not in the test's database: drop it before closing.
      stops.push(async () => {
        await session.end()
        await sql`DROP OWNED BY ${sql(role)}`
        await sql`DROP ROLE ${sql(role)}`
      })
      return { sql: session, role }
    },
    async close() {
      for (const stop of stops.reverse()) await stop()
      await sql.end()
      await admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`
      await admin.end()
    },
  }
}

/** How many rows a submission may have written: jobs, runs and executor jobs. */
export async function rowCounts(
  sql: SqlPool,
): Promise<{ jobs: number; runs: number; executor_jobs: number }> {
  const [row] = await sql<{ jobs: number; runs: number; executor_jobs: number }[]>`
    SELECT (SELECT count(*) FROM pgsched.jobs)::int AS jobs,
      (SELECT count(*) FROM pgsched.runs)::int AS runs,
      (SELECT count(*) FROM graphile_worker.jobs)::int AS executor_jobs`
  return row!
}
