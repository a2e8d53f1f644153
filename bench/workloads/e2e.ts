/**
 * Workload 2, end-to-end throughput: a queue of N no-op runs, queued in bulk beforehand, drained by
 * one worker process at concurrency 10 and 25; runs/s from the worker being ready until the last
 * run has finished. pgsched drains no-op tasks and `true` shell commands; the baselines drain
 * no-op jobs: raw Graphile Worker with default settings (concurrency 10 and 25) and pg-boss
 * (concurrency 10). Every worker is a child process of the benchmark, started the same way.
 *
 * Also exports startGraphileWorker, which the pickup workload uses for its baseline.
 */
import { runMigrations } from 'graphile-worker'
import { PgBoss } from 'pg-boss'

import { createSql, type SqlPool } from '../../src/db/client.ts'
import { NODE, type Service, startService } from '../../test/processes.ts'
import type { Ctx, Figure, Workload } from '../lib/context.ts'
import { cpuWindow, rssMiB, since, until } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { seedQueuedRuns, startPgschedProcess } from '../lib/pgsched.ts'

const CONCURRENCIES = [10, 25] as const
const KINDS = ['task', 'command'] as const
/** How often the benchmark counts what is left: the rate's resolution, same for every system. */
const POLL_MS = 50
/** Jobs per bulk-insert statement when building a baseline's backlog. */
const CHUNK = 10_000
/** pg-boss fetches this many jobs per query and runs them at once: its concurrency 10. */
const PGBOSS_BATCH = 10

const DRAIN_METRIC = {
  task: { 10: METRIC.drainTask10, 25: METRIC.drainTask25 },
  command: { 10: METRIC.drainCommand10, 25: METRIC.drainCommand25 },
} as const

/** What the worker child processes print once they are up. */
const READY = 'bench worker ready'

/**
 * A raw Graphile Worker runner with one task, `noop`, as its own process: Graphile's defaults
 * (no local queue, no batched completions, 2 s fallback poll, LISTEN/NOTIFY), concurrency `c`
 * and a pool of c + 2 connections as pgsched's worker has. With BENCH_RECORD_PICKUP, the task
 * notes when it started relative to its job's created_at, by payload `group`, and prints that on
 * SIGTERM as one line: `pickups {"group": [ms, …]}`.
 */
const GRAPHILE_WORKER = `
import { Logger, run } from 'graphile-worker'
const concurrency = Number(process.env.BENCH_CONCURRENCY)
const pickups = {}
const record = process.env.BENCH_RECORD_PICKUP === '1'
const runner = await run({
  connectionString: process.env.DATABASE_URL,
  concurrency,
  maxPoolSize: concurrency + 2,
  noHandleSignals: true,
  logger: new Logger(() => (level, message) => {
    if (level === 'error' || level === 'warning') console.error(message)
  }),
  taskList: {
    noop: record
      ? async (payload, helpers) => {
          const ms = Date.now() - helpers.job.created_at.getTime()
          ;(pickups[payload.group] ??= []).push(ms)
        }
      : async () => {},
  },
})
process.on('SIGTERM', async () => {
  await runner.stop()
  process.stdout.write('pickups ' + JSON.stringify(pickups) + '\\n', () => process.exit(0))
})
console.log('${READY}')
`

/**
 * A pg-boss worker for queue `noop` as its own process. With batchSize 1, each of pg-boss's fetch
 * loops sleeps its polling interval (2 s) after every job unless burst mode is on, and its
 * ready-count trigger lags a 60 s stats cache; fetching 10 at a time with burstWhenBatchFull keeps
 * 10 jobs in flight and fetches again at once while batches come back full.
 */
const PGBOSS_WORKER = `
import { PgBoss } from 'pg-boss'
const boss = new PgBoss(process.env.DATABASE_URL)
boss.on('error', (e) => console.error(e))
await boss.start()
const batchSize = Number(process.env.BENCH_CONCURRENCY)
await boss.work('noop', { batchSize, burstWhenBatchFull: true }, async (jobs) => {
  await Promise.all(jobs.map(async () => {}))
})
process.on('SIGTERM', async () => {
  await boss.stop()
  process.exit(0)
})
console.log('${READY}')
`

/** Runs inline ESM `code` with the project's Node 24 as a child process; resolves once it is up. */
function startScript(code: string, env: Record<string, string>): Promise<Service> {
  return startService(NODE, ['--input-type=module', '-e', code], env, READY)
}

/**
 * Starts a raw Graphile Worker process on `url` at concurrency `c`. With `recordPickup`, call
 * pickups() after stop(): the recorded delays (ms), by the jobs' payload `group`.
 */
export async function startGraphileWorker(
  url: string,
  c: number,
  recordPickup = false,
): Promise<Service & { pickups(): Record<string, number[]> }> {
  const service = await startScript(GRAPHILE_WORKER, {
    DATABASE_URL: url,
    BENCH_CONCURRENCY: String(c),
    BENCH_RECORD_PICKUP: recordPickup ? '1' : '0',
  })
  // Its own copy of stdout: the service's logs mix in stderr.
  let stdout = ''
  service.child.stdout!.on('data', (d) => (stdout += d))
  return {
    ...service,
    pickups() {
      const line = stdout.split('\n').find((l) => l.startsWith('pickups '))
      if (!line) throw new Error(`graphile-worker printed no pickups; output:\n${service.logs()}`)
      return JSON.parse(line.slice('pickups '.length))
    },
  }
}

/** A fresh database with Graphile Worker's schema and nothing else. */
export async function createGraphileDatabase(ctx: Ctx, name: string): Promise<string> {
  const url = await ctx.pg.createDatabase(name)
  await runMigrations({ connectionString: url })
  return url
}

/** One number from one row. */
async function count(sql: SqlPool, query: string): Promise<number> {
  const [row] = await sql.unsafe<{ n: number }[]>(query)
  return Number(row!.n)
}

/**
 * Polls `remainingQuery` every POLL_MS until it counts 0. The window opens at the first count
 * (taken right after the worker said it is ready; anything it finished before is not counted)
 * and closes at the first count of 0.
 */
async function drain(sql: SqlPool, remainingQuery: string, timeoutMs: number) {
  const t0 = performance.now()
  const counted = await count(sql, remainingQuery)
  await until(
    async () => (await count(sql, remainingQuery)) === 0,
    timeoutMs,
    'the queue to drain',
    POLL_MS,
  )
  return { runs: counted, perSecond: counted / (since(t0) / 1000) }
}

/**
 * Generous: 100 runs/s would be a failure of its own. Commands start in the sandbox (bwrap,
 * cgroups), tens of milliseconds each, mostly in the kernel: 10 runs/s for them.
 */
const drainTimeoutMs = (n: number, floorPerSecond = 100) =>
  Math.max(60_000, (n / floorPerSecond) * 1000)

interface PgschedDrain {
  perSecond: number
  /** CPU-seconds of the worker's process tree and all of Postgres over the window. */
  cpuSeconds: number
  runs: number
  rssMiB: number
}

async function drainPgsched(
  ctx: Ctx,
  n: number,
  kind: 'task' | 'command',
  c: number,
): Promise<PgschedDrain> {
  const url = await ctx.pg.createPgschedDatabase(`bench_e2e_pgsched_${kind}_${c}`)
  const sql = createSql(url, { max: 1 })
  try {
    await seedQueuedRuns(sql, n, kind)
    // The postmaster is among them: its process tree holds every backend, the worker's included.
    const pgPids = await ctx.pg.pids()
    const worker = await startPgschedProcess('worker', url, {
      PGSCHED_WORKER_CONCURRENCY: String(c),
    })
    try {
      const cpu = cpuWindow(() => [worker.child.pid!, ...pgPids])
      const d = await drain(
        sql,
        `SELECT count(*) AS n FROM pgsched.runs WHERE status IN ('waiting', 'queued', 'running', 'failed')`,
        drainTimeoutMs(n, kind === 'command' ? 10 : 100),
      )
      const result = { ...d, cpuSeconds: cpu.stop(), rssMiB: rssMiB(worker.child.pid!) }
      const succeeded = await count(
        sql,
        `SELECT count(*) AS n FROM pgsched.runs WHERE status = 'succeeded'`,
      )
      if (succeeded !== n) throw new Error(`e2e: ${succeeded} of ${n} ${kind} runs succeeded`)
      return result
    } finally {
      await worker.stop()
    }
  } finally {
    await sql.end()
  }
}

async function drainGraphile(ctx: Ctx, n: number, c: number): Promise<number> {
  const url = await createGraphileDatabase(ctx, `bench_e2e_graphile_${c}`)
  const sql = createSql(url, { max: 1 })
  try {
    for (let done = 0; done < n; done += CHUNK) {
      await sql`SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
        SELECT ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
        FROM generate_series(1, ${Math.min(CHUNK, n - done)})))`
    }
    const worker = await startGraphileWorker(url, c)
    try {
      // Graphile Worker deletes a job once it has completed.
      return (await drain(sql, 'SELECT count(*) AS n FROM graphile_worker.jobs', drainTimeoutMs(n)))
        .perSecond
    } finally {
      await worker.stop()
    }
  } finally {
    await sql.end()
  }
}

async function drainPgBoss(ctx: Ctx, n: number, c: number): Promise<number> {
  const url = await ctx.pg.createDatabase(`bench_e2e_pgboss_${c}`)
  // Installs pg-boss's schema and queue, and queues the backlog; then gets out of the way.
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false })
  boss.on('error', (e) => ctx.log(`e2e: pg-boss: ${e}`))
  await boss.start()
  try {
    await boss.createQueue('noop')
    for (let done = 0; done < n; done += CHUNK) {
      await boss.insert(
        'noop',
        Array.from({ length: Math.min(CHUNK, n - done) }, () => ({ data: {} })),
      )
    }
  } finally {
    await boss.stop({ graceful: false })
  }
  const sql = createSql(url, { max: 1 })
  try {
    const worker = await startScript(PGBOSS_WORKER, {
      DATABASE_URL: url,
      BENCH_CONCURRENCY: String(c),
    })
    try {
      return (
        await drain(
          sql,
          `SELECT count(*) AS n FROM pgboss.job WHERE name = 'noop' AND state IN ('created', 'retry', 'active')`,
          drainTimeoutMs(n),
        )
      ).perSecond
    } finally {
      await worker.stop()
    }
  } finally {
    await sql.end()
  }
}

/** Workload 2. */
export const endToEnd: Workload = async (ctx) => {
  const n = ctx.scale(20_000, 3_000)
  // Sandboxed commands drain about a tenth as fast as tasks: fewer keep the window as long.
  const commands = ctx.scale(2_000, 300)
  const figures: Figure[] = []
  const notes: string[] = []
  let cpuPerJob = Number.NaN

  for (const kind of KINDS) {
    for (const c of CONCURRENCIES) {
      ctx.log(`e2e: pgsched, ${kind}, concurrency ${c}`)
      const d = await drainPgsched(ctx, kind === 'command' ? commands : n, kind, c)
      figures.push({
        system: SYSTEMS.pgsched,
        metric: DRAIN_METRIC[kind][c],
        value: d.perSecond,
        unit: 'runs/s',
      })
      if (kind === 'task' && c === 10) cpuPerJob = d.cpuSeconds / d.runs
      if (kind === 'task' && c === 25) {
        figures.push({
          system: SYSTEMS.pgsched,
          metric: METRIC.workerRss25,
          value: d.rssMiB,
          unit: 'MiB',
        })
      }
    }
  }
  for (const c of CONCURRENCIES) {
    ctx.log(`e2e: graphile-worker, concurrency ${c}`)
    figures.push({
      system: SYSTEMS.graphile,
      metric: DRAIN_METRIC.task[c],
      value: await drainGraphile(ctx, n, c),
      unit: 'runs/s',
    })
  }
  ctx.log(`e2e: pg-boss, concurrency ${PGBOSS_BATCH}`)
  figures.push({
    system: SYSTEMS.pgboss,
    metric: DRAIN_METRIC.task[PGBOSS_BATCH],
    value: await drainPgBoss(ctx, n, PGBOSS_BATCH),
    unit: 'runs/s',
  })

  notes.push(
    `Each drain: a fresh database holding ${n.toLocaleString('en-US')} queued no-op runs, queued in bulk beforehand (pgsched: jobs, runs and executor jobs as submit_jobs leaves them; Graphile Worker: graphile_worker.add_jobs; pg-boss: insert; ${CHUNK.toLocaleString('en-US')} per statement), then one worker process. Timed from the worker printing that it is ready until a count (every ${POLL_MS} ms) finds nothing left to do; runs/s is what was left at the first count ÷ that time.`,
    "pgsched: `pgsched worker` with its defaults and PGSCHED_WORKER_CONCURRENCY; a task run calls the no-op handler in bench/tasks, a command run spawns `true` through the shell in the default sandbox (bwrap, a cgroup, rlimits; see the README's Job isolation). Every run is checked to have succeeded. pgsched records each run's history (the run with its status and times, its attempt, its events), which raw Graphile Worker does not: it deletes a job when it completes.",
    "Raw Graphile Worker: `run()` with Graphile's defaults (no local queue, no batched completions), a no-op task, concurrency 10 or 25 and a pool of concurrency + 2 connections, as pgsched's worker has (Graphile warns when the pool is smaller than the concurrency).",
    `pg-boss: one \`work()\` with batchSize ${PGBOSS_BATCH} and burstWhenBatchFull, the handler running the ${PGBOSS_BATCH} jobs at once, other settings default. pg-boss's concurrency is jobs fetched per query × fetch loops; with batchSize 1 each loop waits its 2 s polling interval between jobs (about 5 jobs/s for 10 loops) unless burst mode is on, and its other burst trigger reads a stats cache refreshed every 60 s. Fetching and completing 10 jobs per statement favours pg-boss over raw Graphile Worker, which with its defaults fetches and completes one job at a time; pgsched's worker claims and completes in batches too (Graphile's local queue, its size the concurrency).`,
    'CPU per job (cost section): CPU-seconds of the pgsched worker process (and its children) and of every Postgres process over the drain of no-op tasks at concurrency 10, ÷ the runs drained in that window. Worker RSS: the worker process at the end of the concurrency-25 drain of no-op tasks.',
  )
  return {
    id: 'e2e',
    title: 'End-to-end execution: draining a queue of no-op runs',
    figures,
    notes,
    cpuSecondsPerJob: { 'execute a no-op job': cpuPerJob },
  }
}
