/**
 * Workload 1, submit throughput: REST `POST /v1/jobs` with a real HTTP load generator
 * (autocannon) at 64 clients and at 1 (latency at light load); SQL submission one job per
 * transaction from 16 connections; batches of 1,000. The same SQL and batch paths are measured on
 * raw Graphile Worker (`add_job`, `add_jobs`) and pg-boss (`send`, `insert`).
 */
import autocannon from 'autocannon'
import { runMigrations } from 'graphile-worker'
import { PgBoss } from 'pg-boss'

import { mintToken } from '../../src/api/tokens.ts'
import { createSql, type SqlPool } from '../../src/db/client.ts'
import { freePort, NODE, startService } from '../../test/processes.ts'
import type { Ctx, Figure, Section, Workload } from '../lib/context.ts'
import { cpuWindow } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { BENCH_SECRET, startPgschedProcess } from '../lib/pgsched.ts'
import { FLOOR_READY, FLOOR_TABLE_DDL } from '../lib/rest-floor.ts'

const SQL_CONNECTIONS = 16
const BATCH = 1000

/** Runs `call` from `workers` concurrent loops for `seconds`; returns calls per second. */
export async function closedLoop(workers: number, seconds: number, call: () => Promise<unknown>) {
  const deadline = performance.now() + seconds * 1000
  let calls = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (performance.now() < deadline) {
        await call()
        calls++
      }
    }),
  )
  return calls / ((performance.now() - started) / 1000)
}

export async function restLoad(url: string, token: string, connections: number, seconds: number) {
  const result = await autocannon({
    url: `${url}/v1/jobs`,
    method: 'POST',
    connections,
    duration: seconds,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench', task: 'noop' }),
  })
  return {
    perSecond: result['2xx'] / seconds,
    ok: result['2xx'],
    failed: result.non2xx + result.errors + result.timeouts,
    p50: result.latency.p50,
    p99: result.latency.p99,
  }
}

async function pgsched(ctx: Ctx, seconds: number): Promise<Section> {
  const figures: Figure[] = []
  const notes: string[] = []
  const url = await ctx.pg.createPgschedDatabase('bench_submit_pgsched')
  const port = await freePort()
  const api = await startPgschedProcess('api', url, { PORT: String(port) })
  const sql = createSql(url, { max: SQL_CONNECTIONS })
  const fig = (metric: string, value: number, unit: string) =>
    figures.push({ system: SYSTEMS.pgsched, metric, value, unit })
  let cpuPerJob = Number.NaN
  try {
    const token = await mintToken(BENCH_SECRET, 'bench', ['submitter'], 3600)
    const base = `http://127.0.0.1:${port}`
    await restLoad(base, token, 8, 1) // warm up: JIT, connections, plans

    const light = await restLoad(base, token, 1, seconds)
    fig(METRIC.restSubmit1P50, light.p50, 'ms')
    fig(METRIC.restSubmit1P99, light.p99, 'ms')

    const before = await jobCount(sql)
    const pgPids = await ctx.pg.pids()
    const apiCpu = cpuWindow(() => [api.child.pid!])
    const pgCpu = cpuWindow(() => pgPids)
    const heavy = await restLoad(base, token, 64, seconds)
    const [apiSeconds, pgSeconds] = [apiCpu.stop(), pgCpu.stop()]
    const cpuSeconds = apiSeconds + pgSeconds
    fig(METRIC.restSubmit64, heavy.perSecond, 'jobs/s')
    fig(METRIC.restSubmit64P99, heavy.p99, 'ms')
    fig('REST submit p50, 64 clients', heavy.p50, 'ms')
    const stored = (await jobCount(sql)) - before
    cpuPerJob = cpuSeconds / heavy.ok
    notes.push(
      `REST: autocannon in the benchmark process, ${seconds} s per load, body \`{"name":"bench","task":"noop"}\`, a submitter token (JWT verified on every request), the rate limit set out of reach. At 64 clients: ${heavy.ok.toLocaleString('en-US')} answered 201, ${heavy.failed} failed; ${stored.toLocaleString('en-US')} jobs stored (every 201 is a stored job and its queued run). CPU per job: API process ${cpuMs(apiSeconds, heavy.ok)} ms, Postgres ${cpuMs(pgSeconds, heavy.ok)} ms.`,
    )

    fig(
      METRIC.sqlSubmit,
      await closedLoop(
        SQL_CONNECTIONS,
        seconds,
        () => sql`SELECT pgsched.submit_job(name => 'bench', task => 'noop')`,
      ),
      'jobs/s',
    )
    const batch = Array.from({ length: BATCH }, () => ({ name: 'bench', task: 'noop' }))
    const batches = await closedLoop(
      2,
      seconds,
      () => sql`SELECT count(*) FROM pgsched.submit_jobs(${sql.json(batch)}::jsonb)`,
    )
    fig(METRIC.batchSubmit, batches * BATCH, 'jobs/s')
  } finally {
    await sql.end()
    await api.stop()
  }
  return {
    id: 'submit',
    title: 'Submit throughput',
    figures,
    notes,
    cpuSecondsPerJob: { 'submit a job over REST (64 clients)': cpuPerJob },
  }
}

/**
 * The REST floor (bench/lib/rest-floor.ts) in its own process and database, loaded as pgsched's
 * API is: the same token, body and clients.
 */
async function restFloor(ctx: Ctx, seconds: number): Promise<{ figures: Figure[]; note: string }> {
  const url = await ctx.pg.createDatabase('bench_submit_floor')
  const sql = createSql(url, { max: 1 })
  await sql.unsafe(FLOOR_TABLE_DDL)
  await sql.end()
  const pgPids = await ctx.pg.pids()
  const port = await freePort()
  const floor = await startService(
    NODE,
    ['bench/lib/rest-floor.ts'],
    { DATABASE_URL: url, PORT: String(port), JWT_SECRET: BENCH_SECRET },
    FLOOR_READY,
  )
  try {
    const token = await mintToken(BENCH_SECRET, 'bench', ['submitter'], 3600)
    const base = `http://127.0.0.1:${port}`
    await restLoad(base, token, 8, 1) // warm up, as pgsched's API
    const floorCpu = cpuWindow(() => [floor.child.pid!])
    const pgCpu = cpuWindow(() => pgPids)
    const heavy = await restLoad(base, token, 64, seconds)
    const [floorSeconds, pgSeconds] = [floorCpu.stop(), pgCpu.stop()]
    const fig = (metric: string, value: number, unit: string) => ({
      system: SYSTEMS.restFloor,
      metric,
      value,
      unit,
    })
    return {
      figures: [
        fig(METRIC.restSubmit64, heavy.perSecond, 'jobs/s'),
        fig(METRIC.restSubmit64P99, heavy.p99, 'ms'),
        fig('REST submit p50, 64 clients', heavy.p50, 'ms'),
      ],
      note: `REST floor (the column "${SYSTEMS.restFloor}"): bench/lib/rest-floor.ts in its own process, measured right after pgsched's API with the same load: a bare Hono app on @hono/node-server that verifies the same HS256 JWT with jose (issuer, audience and secret as pgsched's) and inserts one row per request (owner and body) into a plain table with an identity key, through pgsched's group commit (src/db/group-commit.ts, same defaults), answering 201 after the commit. At 64 clients: ${heavy.ok.toLocaleString('en-US')} answered 201, ${heavy.failed} failed; CPU per request: floor process ${cpuMs(floorSeconds, heavy.ok)} ms, Postgres ${cpuMs(pgSeconds, heavy.ok)} ms. It is this machine's limit for "HTTP + auth + durable insert"; pgsched ÷ it is the target's ratio.`,
    }
  } finally {
    await floor.stop()
  }
}

/** CPU milliseconds per job, as the notes print them. */
const cpuMs = (seconds: number, jobs: number) => ((seconds * 1000) / jobs).toFixed(2)

async function jobCount(sql: SqlPool): Promise<number> {
  const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgsched.jobs`
  return row!.n
}

async function graphile(ctx: Ctx, seconds: number): Promise<Figure[]> {
  const url = await ctx.pg.createDatabase('bench_submit_graphile')
  await runMigrations({ connectionString: url })
  const sql = createSql(url, { max: SQL_CONNECTIONS })
  try {
    const one = await closedLoop(
      SQL_CONNECTIONS,
      seconds,
      () => sql`SELECT graphile_worker.add_job('noop', '{}'::json)`,
    )
    const specs = sql`ARRAY(SELECT ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec FROM generate_series(1, ${BATCH}))`
    const batches = await closedLoop(
      2,
      seconds,
      () => sql`SELECT count(*) FROM graphile_worker.add_jobs(${specs})`,
    )
    return [
      { system: SYSTEMS.graphile, metric: METRIC.sqlSubmit, value: one, unit: 'jobs/s' },
      {
        system: SYSTEMS.graphile,
        metric: METRIC.batchSubmit,
        value: batches * BATCH,
        unit: 'jobs/s',
      },
    ]
  } finally {
    await sql.end()
  }
}

async function pgBoss(ctx: Ctx, seconds: number): Promise<Figure[]> {
  const url = await ctx.pg.createDatabase('bench_submit_pgboss')
  const boss = new PgBoss({
    connectionString: url,
    max: SQL_CONNECTIONS,
    supervise: false,
    schedule: false,
  })
  boss.on('error', () => {})
  await boss.start()
  try {
    await boss.createQueue('noop')
    const one = await closedLoop(SQL_CONNECTIONS, seconds, () => boss.send('noop', {}))
    const batch = Array.from({ length: BATCH }, () => ({ data: {} }))
    const batches = await closedLoop(2, seconds, () => boss.insert('noop', batch))
    return [
      { system: SYSTEMS.pgboss, metric: METRIC.sqlSubmit, value: one, unit: 'jobs/s' },
      {
        system: SYSTEMS.pgboss,
        metric: METRIC.batchSubmit,
        value: batches * BATCH,
        unit: 'jobs/s',
      },
    ]
  } finally {
    await boss.stop({ graceful: false })
  }
}

/** Workload 1. */
export const submitThroughput: Workload = async (ctx) => {
  const seconds = ctx.scale(10, 3)
  const section = await pgsched(ctx, seconds)
  ctx.log('submit: REST floor')
  const floor = await restFloor(ctx, seconds)
  section.figures.push(...floor.figures)
  section.notes.push(floor.note)
  ctx.log('submit: graphile-worker')
  section.figures.push(...(await graphile(ctx, seconds)))
  ctx.log('submit: pg-boss')
  section.figures.push(...(await pgBoss(ctx, seconds)))
  section.notes.push(
    `SQL: ${SQL_CONNECTIONS} connections in a closed loop, each call its own transaction (pgsched.submit_job, graphile_worker.add_job, pg-boss send). Batches: 2 connections, ${BATCH} jobs per call (pgsched.submit_jobs, graphile_worker.add_jobs, pg-boss insert). pgsched's single submission also writes the run, its history event and the executor job, and checks the degradation level and (for non-admin SQL roles) the rate limit.`,
  )
  return section
}
