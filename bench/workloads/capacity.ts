/**
 * @module Capacity: CPU per job of each pgsched process and of Postgres, stage by stage, for the
 * README's capacity model: submit (the API process on the REST path; Postgres alone on the SQL
 * paths), a cron tick (the scheduler process, a fan-out of many schedules due at once) and
 * execution (a worker process running no-op tasks). From those: how many jobs a second one
 * Postgres core carries end to end (submit + execute), and one worker core.
 *
 * Method. One database; the stages run one after the other, each with only its own pgsched
 * process running, and each is a CPU window: utime + stime from /proc of the process (and its
 * children) and of every Postgres server process (postmaster, backends, background workers:
 * WAL writer, checkpointer, autovacuum), divided by the jobs the stage produced (counted in the
 * database). The load generators (autocannon, the SQL loops) run in the benchmark process and are
 * not counted. The runs every stage queues are the backlog the worker drains at the end.
 */
import { mintToken } from '../../src/api/tokens.ts'
import { createSql, type SqlPool } from '../../src/db/client.ts'
import { freePort } from '../../test/processes.ts'
import type { Ctx, Figure, Section, Workload } from '../lib/context.ts'
import { cpuWindow, until } from '../lib/measure.ts'
import { SYSTEMS } from '../lib/metrics.ts'
import { BENCH_SECRET, startPgschedProcess } from '../lib/pgsched.ts'
import { table } from '../lib/report.ts'
import { createScheduledJobs, fanOut } from './cron.ts'
import { closedLoop, restLoad } from './submit.ts'

const REST_CLIENTS = 16
const SQL_CONNECTIONS = 16
const BATCH = 1000
const WORKER_CONCURRENCY = 10

/** One stage: CPU-ms per job of its pgsched process (NaN when it has none) and of Postgres. */
interface Stage {
  name: string
  process: string
  jobs: number
  processMs: number
  postgresMs: number
}

/** Runs `load` inside a CPU window over `pids` (a pgsched process, or none) and Postgres. */
async function measured(
  ctx: Ctx,
  pids: number[],
  load: () => Promise<void>,
): Promise<{ process: number; postgres: number }> {
  const pg = await ctx.pg.pids()
  const own = cpuWindow(() => pids)
  const postgres = cpuWindow(() => pg)
  await load()
  return { process: pids.length ? own.stop() : Number.NaN, postgres: postgres.stop() }
}

async function jobCount(sql: SqlPool): Promise<number> {
  const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgsched.jobs`
  return row!.n
}

const perJobMs = (seconds: number, jobs: number) =>
  jobs > 0 ? (seconds * 1000) / jobs : Number.NaN

export const capacity: Workload = async (ctx: Ctx): Promise<Section> => {
  const seconds = ctx.scale(5, 2)
  const fanOutJobs = ctx.scale(2_000, 500)
  const batches = ctx.scale(20, 2)
  const url = await ctx.pg.createPgschedDatabase('bench_capacity')
  const sql = createSql(url, { max: SQL_CONNECTIONS, applicationName: 'bench-capacity' })
  const stages: Stage[] = []
  const stage = (
    name: string,
    process: string,
    jobs: number,
    cpu: { process: number; postgres: number },
  ) =>
    stages.push({
      name,
      process,
      jobs,
      processMs: perJobMs(cpu.process, jobs),
      postgresMs: perJobMs(cpu.postgres, jobs),
    })
  try {
    // Cron first: its set-up retargets every job of the database, which holds only its own then.
    await createScheduledJobs(sql, fanOutJobs)
    const fan = await fanOut(ctx, sql, url, fanOutJobs)
    stage(
      `cron tick (fan-out of ${fanOutJobs.toLocaleString('en-US')} schedules due at once)`,
      'scheduler',
      fanOutJobs,
      {
        process: fan.schedulerCpuSeconds,
        postgres: fan.cpuSeconds - fan.schedulerCpuSeconds,
      },
    )
    ctx.log('capacity: cron tick measured')

    const port = await freePort()
    const api = await startPgschedProcess('api', url, { PORT: String(port) })
    try {
      const token = await mintToken(BENCH_SECRET, 'bench', ['submitter'], 3600)
      const base = `http://127.0.0.1:${port}`
      await restLoad(base, token, 8, 1) // warm up: JIT, connections, plans
      const before = await jobCount(sql)
      const cpu = await measured(ctx, [api.child.pid!], async () => {
        await restLoad(base, token, REST_CLIENTS, seconds)
      })
      stage(
        `REST submit (POST /v1/jobs, ${REST_CLIENTS} clients)`,
        'API',
        (await jobCount(sql)) - before,
        cpu,
      )
    } finally {
      await api.stop()
    }
    ctx.log('capacity: REST submit measured')

    const submitOne = () => sql`SELECT pgsched.submit_job(name => 'capacity', task => 'noop')`
    // Warm up every connection first: a new backend's first calls compile and plan the functions.
    await closedLoop(SQL_CONNECTIONS, 0.5, submitOne)
    let before = await jobCount(sql)
    let cpu = await measured(ctx, [], async () => {
      await closedLoop(SQL_CONNECTIONS, seconds, submitOne)
    })
    stage(
      `SQL submit (pgsched.submit_job, one per transaction, ${SQL_CONNECTIONS} connections)`,
      '—',
      (await jobCount(sql)) - before,
      cpu,
    )

    const batch = Array.from({ length: BATCH }, () => ({ name: 'capacity', task: 'noop' }))
    const submitBatch = () =>
      sql`SELECT count(*) FROM pgsched.submit_jobs(${sql.json(batch)}::jsonb)`
    await submitBatch()
    before = await jobCount(sql)
    cpu = await measured(ctx, [], async () => {
      for (let i = 0; i < batches; i++) await submitBatch()
    })
    stage(
      `batch submit (pgsched.submit_jobs, ${BATCH.toLocaleString('en-US')} per call)`,
      '—',
      (await jobCount(sql)) - before,
      cpu,
    )
    ctx.log('capacity: SQL submits measured')

    const succeeded = async () => {
      const [row] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pgsched.runs WHERE status = 'succeeded'`
      return row!.n
    }
    const unfinished = async () => {
      const [row] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pgsched.runs
        WHERE status IN ('waiting', 'queued', 'running', 'failed')`
      return row!.n
    }
    const backlog = await unfinished()
    const worker = await startPgschedProcess('worker', url, {
      PGSCHED_WORKER_CONCURRENCY: String(WORKER_CONCURRENCY),
    })
    try {
      // Counted from the window's start: runs the worker finished while starting are left out of
      // both the count and the CPU.
      const done0 = await succeeded()
      cpu = await measured(ctx, [worker.child.pid!], () =>
        until(
          async () => (await unfinished()) === 0,
          300_000,
          `the worker to drain ${backlog} runs`,
          100,
        ),
      )
      stage(
        `execute a no-op task (worker, concurrency ${WORKER_CONCURRENCY})`,
        'worker',
        (await succeeded()) - done0,
        cpu,
      )
    } finally {
      await worker.stop()
    }
    ctx.log('capacity: execution measured')
  } finally {
    await sql.end()
  }
  return report(stages)
}

const fmt = (v: number) =>
  Number.isFinite(v) ? (v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(3)) : '—'
const perCore = (ms: number) => (ms > 0 ? 1000 / ms : Number.NaN)

function report(stages: Stage[]): Section {
  const find = (process: string, prefix: string) =>
    stages.find((s) => s.process === process && s.name.startsWith(prefix))
  const exec = find('worker', 'execute')
  const figures: Figure[] = []
  const fig = (metric: string, value: number, unit: string) =>
    figures.push({ system: SYSTEMS.pgsched, metric, value, unit })
  for (const s of stages) {
    if (Number.isFinite(s.processMs))
      fig(`${s.process} CPU per job: ${s.name}`, s.processMs, 'CPU-ms')
    fig(`Postgres CPU per job: ${s.name}`, s.postgresMs, 'CPU-ms')
  }
  // End to end: one way in, then execution.
  const ends: [string, Stage | undefined][] = [
    ['REST submit', find('API', 'REST')],
    ['SQL submit_job', find('—', 'SQL')],
    ['batch submit_jobs', find('—', 'batch')],
    ['cron tick', find('scheduler', 'cron')],
  ]
  const derived: string[][] = []
  for (const [way, s] of ends) {
    if (!s || !exec) continue
    const pgMs = s.postgresMs + exec.postgresMs
    const jobs = perCore(pgMs)
    fig(`jobs/s one Postgres core carries: ${way} + execute`, jobs, 'jobs/s')
    derived.push([
      `one Postgres core, ${way} + execute`,
      `${fmt(pgMs)} CPU-ms/job`,
      `${fmt(jobs)} jobs/s`,
    ])
  }
  for (const s of stages.filter((x) => Number.isFinite(x.processMs))) {
    const jobs = perCore(s.processMs)
    fig(`jobs/s one ${s.process} core carries`, jobs, 'jobs/s')
    derived.push([
      `one ${s.process} process core, ${s.name}`,
      `${fmt(s.processMs)} CPU-ms/job`,
      `${fmt(jobs)} jobs/s`,
    ])
  }
  return {
    id: 'capacity',
    title: 'Capacity: CPU per job by stage, and what one core carries',
    figures,
    extra: [
      table(
        ['stage', 'jobs', 'pgsched process', 'its CPU-ms per job', 'Postgres CPU-ms per job'],
        stages.map((s) => [
          s.name,
          s.jobs.toLocaleString('en-US'),
          s.process,
          fmt(s.processMs),
          fmt(s.postgresMs),
        ]),
      ),
      '',
      table(['what one core carries', 'CPU per job', 'jobs/s per core'], derived),
    ].join('\n'),
    notes: [
      'One database; the stages in the order of the table, each with only its own pgsched process running (none for the SQL paths, which the benchmark process drives over its own connections). Each stage is a CPU window over the pgsched process (with its children) and every PostgreSQL server process (backends, WAL writer, checkpointer, autovacuum), utime + stime from /proc; divided by the jobs the stage produced, counted in the database. The load generators in the benchmark process are not counted.',
      "Cron tick: a fan-out of schedules all due at the same second (as in the cron section), CPU from the tick until every run was visible, the poller's own backend left out. Execution: one worker draining the runs every earlier stage queued (REST, SQL, batch and cron runs alike), counted from the first count after it was ready.",
      "jobs/s one Postgres core carries = 1000 ÷ (Postgres CPU-ms to submit one job that way + to execute it). CPU only: a commit also waits for its WAL flush (fsync), which takes no CPU but bounds one connection's commits a second; many connections share a flush (group commit). The machine's 2 cores are shared by Postgres, the pgsched process and the load generator, so a figure here is CPU per job under contention, not a throughput.",
    ],
  }
}
