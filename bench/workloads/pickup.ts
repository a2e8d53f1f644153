/**
 * Workload 3, pickup latency: how long a run waits from being queued until it is running, at a
 * steady 50 and 1,000 submissions a second. One worker process (concurrency 10, a no-op task)
 * runs throughout; the benchmark process submits on a 10 ms tick from a pool: one job per SQL
 * call at 50/s, one batch per tick at 1,000/s. pgsched: started_at − created_at of each run (both
 * database time). Raw Graphile Worker: the moment its task starts (Node's clock) − the job's
 * created_at (database time).
 */
import { setTimeout as sleep } from 'node:timers/promises'

import { createSql } from '../../src/db/client.ts'
import type { Ctx, Figure, Workload } from '../lib/context.ts'
import { percentile, until } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { startPgschedProcess } from '../lib/pgsched.ts'
import { createGraphileDatabase, startGraphileWorker } from './e2e.ts'

const RATES = [50, 1000] as const
const TICK_MS = 10
const CONCURRENCY = 10
/** Calls are started without waiting for earlier ones: a slow commit must not hold up the next. */
const CONNECTIONS = 16
/** The most jobs one batch call takes (pgsched.submit_jobs' limit). */
const MAX_BATCH = 1000
/**
 * Whether `rate` is submitted as one batch per tick rather than one job per call: one job per
 * transaction does not reach 1,000/s on 2 cores beside a busy worker (when this was written:
 * ~470/s for pgsched.submit_job, ~900/s for graphile_worker.add_job), and what is measured here is
 * pickup, not submission (workload 1 measures that). Both systems are submitted to the same way.
 */
const batched = (rate: number) => rate >= 1000
/** Before the timed windows: warms the pool, the worker's JIT and the query plans. */
const WARMUP = { rate: 50, seconds: 1 }

const PICKUP_METRIC = {
  50: { p50: METRIC.pickup50P50, p95: METRIC.pickup50P95, p99: METRIC.pickup50P99 },
  1000: { p50: METRIC.pickup1000P50, p95: METRIC.pickup1000P95, p99: METRIC.pickup1000P99 },
} as const

/** What a paced submission window achieved. */
interface Submitted {
  ok: number
  failed: number
  /** Acknowledged submissions ÷ seconds from the first until the last was acknowledged. */
  perSecond: number
  /** The first error, when any call failed. */
  error?: unknown
  /** Jobs not yet finished when the last submission was acknowledged: how far the worker fell behind. */
  backlog?: number
}

/**
 * Submits `rate` jobs a second for `seconds`. Every TICK_MS it starts, without waiting for earlier
 * calls, what is due by then (so a late tick catches up instead of lowering the rate): one
 * `submit(1)` per job, or with `inBatches` one `submit(n)` for the tick's n jobs. Then waits for all.
 */
async function paced(
  rate: number,
  seconds: number,
  inBatches: boolean,
  submit: (n: number) => Promise<unknown>,
): Promise<Submitted> {
  const total = rate * seconds
  const started = performance.now()
  const inFlight: Promise<unknown>[] = []
  let sent = 0
  let failed = 0
  let error: unknown
  const call = (n: number) =>
    inFlight.push(
      submit(n).catch((e) => {
        failed += n
        error ??= e
      }),
    )
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate))
    if (inBatches) for (let i = sent; i < due; i += MAX_BATCH) call(Math.min(MAX_BATCH, due - i))
    else for (let i = sent; i < due; i++) call(1)
    sent = Math.max(sent, due)
    await sleep(TICK_MS)
  }
  await Promise.all(inFlight)
  const ok = total - failed
  return { ok, failed, error, perSecond: ok / ((performance.now() - started) / 1000) }
}

/**
 * p50/p95/p99 of `ms` as this rate's figures for `system`; the p50 figure carries the whole
 * distribution, p0..p100, for the charts.
 */
function percentiles(system: string, rate: (typeof RATES)[number], ms: number[]): Figure[] {
  const m = PICKUP_METRIC[rate]
  const all = Array.from({ length: 101 }, (_, p) => percentile(ms, p))
  return (['p50', 'p95', 'p99'] as const).map((p) => ({
    system,
    metric: m[p],
    value: all[Number(p.slice(1))]!,
    unit: 'ms',
    ...(p === 'p50' ? { percentiles: all } : {}),
  }))
}

const describe = (system: string, rate: number, s: Submitted, samples: number) =>
  `${system} at ${rate.toLocaleString('en-US')} runs/s: ${s.ok.toLocaleString('en-US')} jobs submitted${batched(rate) ? ` in batches (one call per ${TICK_MS} ms tick, about ${rate / (1000 / TICK_MS)} jobs each)` : ' one by one'}, ${s.perSecond.toFixed(0)}/s achieved${s.failed ? `, ${s.failed} failed (${s.error})` : ''}; ${s.backlog!.toLocaleString('en-US')} not yet finished when the last submission was acknowledged; ${samples.toLocaleString('en-US')} pickups measured.`

type Result = { figures: Figure[]; notes: string[] }

/**
 * One window: `rate` submissions a second for `seconds`, then waits until `unfinished` counts 0,
 * so that the next window starts on an idle worker.
 */
async function window(
  rate: number,
  seconds: number,
  submit: (n: number) => Promise<unknown>,
  unfinished: () => Promise<number>,
): Promise<Submitted> {
  const submitted = await paced(rate, seconds, batched(rate), submit)
  submitted.backlog = await unfinished()
  await until(
    async () => (await unfinished()) === 0,
    300_000,
    `the jobs submitted at ${rate}/s to finish`,
  )
  return submitted
}

async function pgsched(ctx: Ctx, seconds: number): Promise<Result> {
  const url = await ctx.pg.createPgschedDatabase('bench_pickup_pgsched')
  const sql = createSql(url, { max: CONNECTIONS })
  const figures: Figure[] = []
  const notes: string[] = []
  const worker = await startPgschedProcess('worker', url, {
    PGSCHED_WORKER_CONCURRENCY: String(CONCURRENCY),
  })
  try {
    // The job's name tells the windows apart.
    const submit = (name: string) => (n: number) =>
      n === 1
        ? sql`SELECT pgsched.submit_job(name => ${name}, task => 'noop')`
        : sql`SELECT count(*) FROM pgsched.submit_jobs(${sql.json(Array(n).fill({ name, task: 'noop' }))}::jsonb)`
    const unfinished = async () => {
      const [row] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pgsched.runs
        WHERE status IN ('waiting', 'queued', 'running', 'failed')`
      return row!.n
    }
    await window(WARMUP.rate, WARMUP.seconds, submit('pickup-warmup'), unfinished)
    for (const rate of RATES) {
      ctx.log(`pickup: pgsched at ${rate}/s`)
      const submitted = await window(rate, seconds, submit(`pickup-${rate}`), unfinished)
      const rows = await sql<{ ms: number }[]>`
        SELECT extract(epoch FROM r.started_at - r.created_at)::float8 * 1000 AS ms
        FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
        WHERE j.name = ${`pickup-${rate}`} AND r.status = 'succeeded'`
      const ms = rows.map((r) => r.ms)
      figures.push(...percentiles(SYSTEMS.pgsched, rate, ms))
      notes.push(describe('pgsched', rate, submitted, ms.length))
    }
  } finally {
    await worker.stop()
    await sql.end()
  }
  return { figures, notes }
}

async function graphile(ctx: Ctx, seconds: number): Promise<Result> {
  const url = await createGraphileDatabase(ctx, 'bench_pickup_graphile')
  const sql = createSql(url, { max: CONNECTIONS })
  const worker = await startGraphileWorker(url, CONCURRENCY, true)
  const submitted = new Map<number, Submitted>()
  try {
    // The payload's group tells the windows apart.
    const submit = (group: string) => (n: number) =>
      n === 1
        ? sql`SELECT graphile_worker.add_job('noop', ${sql.json({ group })}::json)`
        : sql`SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
            SELECT ROW('noop', ${sql.json({ group })}::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
            FROM generate_series(1, ${n})))`
    // Graphile Worker deletes a job once it has completed.
    const unfinished = async () => {
      const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM graphile_worker.jobs`
      return row!.n
    }
    await window(WARMUP.rate, WARMUP.seconds, submit('warmup'), unfinished)
    for (const rate of RATES) {
      ctx.log(`pickup: graphile-worker at ${rate}/s`)
      submitted.set(rate, await window(rate, seconds, submit(String(rate)), unfinished))
    }
  } finally {
    await worker.stop()
    await sql.end()
  }
  // The worker printed what it recorded as it stopped.
  const pickups = worker.pickups()
  const figures: Figure[] = []
  const notes: string[] = []
  for (const rate of RATES) {
    const ms = pickups[String(rate)] ?? []
    figures.push(...percentiles(SYSTEMS.graphile, rate, ms))
    notes.push(describe('graphile-worker', rate, submitted.get(rate)!, ms.length))
  }
  return { figures, notes }
}

/** Workload 3. */
export const pickupLatency: Workload = async (ctx) => {
  const seconds = ctx.scale(30, 5)
  const mine = await pgsched(ctx, seconds)
  const theirs = await graphile(ctx, seconds)
  return {
    id: 'pickup',
    title: 'Pickup latency: queued → running',
    figures: [...mine.figures, ...theirs.figures],
    notes: [
      `Each system: a fresh database, one worker process at concurrency ${CONCURRENCY} with a no-op task, then ${seconds} s at 50 submissions a second and ${seconds} s at 1,000, each window drained before the next. The benchmark process submits from a pool of ${CONNECTIONS} connections, starting every ${TICK_MS} ms the calls due by then without waiting for earlier ones: at 50/s one job per call and transaction (pgsched.submit_job, graphile_worker.add_job); at 1,000/s the tick's jobs in one call (pgsched.submit_jobs, graphile_worker.add_jobs), because one job per transaction does not keep up with 1,000/s on 2 cores beside a busy worker, and what is measured here is pickup, not submission (see the submit section for that). A ${WARMUP.seconds} s warm-up at ${WARMUP.rate}/s comes first and is not counted.`,
      "pgsched: started_at − created_at of every run, both set by the database (created_at when the submitting transaction began, started_at when the worker recorded the attempt as started). Raw Graphile Worker keeps no such history: its task notes Date.now() when it starts, minus the job's created_at (database time, read as a JS Date to the millisecond). Both clocks are the same host's; Graphile's figures are whole milliseconds (both times are read to the millisecond).",
      'Distributions: the p50 figure of each system and rate carries `percentiles`, p0 to p100 of its pickups (101 values, ms; nearest rank), for the latency charts.',
      ...mine.notes,
      ...theirs.notes,
    ],
  }
}
