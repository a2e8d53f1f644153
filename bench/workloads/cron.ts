/**
 * @module Cron fan-out: 10,000 schedules due in the same second. How long the scheduler leader
 * takes to enqueue all their runs (a run row and its Graphile Worker job each), and how late each
 * tick fired.
 *
 * Method. The jobs are created with no scheduler running, then all given the same next tick T (a
 * whole second a few seconds ahead) and a schedule whose ticks are one day apart ("S M H * * *",
 * T's time of day in UTC). That schedule makes the leader's own computation agree with the plan:
 * the latest tick at or before now is T however long the fan-out takes (an every-second
 * schedule would fire T+1, T+2… in the batches that start after T+1), and the next tick is a
 * day later, so no second wave follows. A `pgsched scheduler` process is leader and asleep
 * before T; no worker runs, since enqueued is all that is measured.
 */

import { createSql, type SqlPool } from '../../src/db/client.ts'
import type { Ctx, Section, Workload } from '../lib/context.ts'
import { cpuWindow, percentile, until } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { startPgschedProcess } from '../lib/pgsched.ts'

/** submit_jobs takes at most 1,000 jobs a call. */
const SUBMIT_BATCH = 1000
/** How far ahead T is: time to retarget every job and for the leader to go back to sleep. */
const LEAD_SECONDS = 3
/** How often the poller looks for the runs; the resolution of "all enqueued after". */
const POLL_MS = 10

export const cronFanOut: Workload = async (ctx: Ctx): Promise<Section> => {
  const n = ctx.scale(10_000, 2_000)
  const url = await ctx.pg.createPgschedDatabase('bench_cron')
  const sql = createSql(url, { max: 2, applicationName: 'bench-cron' })
  try {
    const t0 = performance.now()
    await createScheduledJobs(sql, n)
    ctx.log(`cron: ${n} scheduled jobs created in ${Math.round(performance.now() - t0)} ms`)

    const fan = await fanOut(ctx, sql, url, n)
    const check = await verify(sql, fan.tick, n)
    ctx.log(`cron: all ${n} runs enqueued ${fan.allMs.toFixed(0)} ms after the tick`)

    const lateness = await latenessMs(sql, fan.tick)
    if (!check.ok) ctx.log(`cron: CHECK FAILED: ${check.text}`)
    const notes = [
      `${n.toLocaleString('en-US')} jobs (task noop), created with pgsched.submit_jobs in batches of ${SUBMIT_BATCH}, then all given the same next tick T and the schedule "S M H * * *" (T's time of day, UTC): the leader's latest tick at or before now is T however long the fan-out takes, and the next one is a day later, so there is no second wave. One \`pgsched scheduler\` process, leader and asleep before T; no worker.`,
      `"All runs enqueued after": from T to the first poll (every ${POLL_MS} ms, database clock, statement start) that saw all ${n.toLocaleString('en-US')} runs committed, each with its Graphile Worker job (same transaction). The last fire transaction began ${fan.lastCreatedMs.toFixed(0)} ms after T (max(runs.created_at) − T; created_at is its transaction's start, so this misses that transaction's own work and commit).`,
      `Tick lateness: runs.created_at − scheduled_for per run (first ${lateness.min.toFixed(0)} ms, p50 ${lateness.p50.toFixed(0)} ms, p99 ${lateness.p99.toFixed(0)} ms, max ${lateness.max.toFixed(0)} ms); created_at is the start of the transaction that fired the tick, so a run became visible up to one batch later.`,
      `Checks: ${check.ok ? 'passed' : 'FAILED'}: ${check.text}.`,
      `CPU from T until all were visible (the poller's own backend excluded): ${cpuMs(fan.cpuSeconds)} for ${n.toLocaleString('en-US')} ticks, of which the scheduler process ${cpuMs(fan.schedulerCpuSeconds)} and Postgres ${cpuMs(fan.cpuSeconds - fan.schedulerCpuSeconds)}.`,
    ]
    return {
      id: 'cron',
      title: 'Cron fan-out: 10,000 schedules due in the same second',
      figures: [
        { system: SYSTEMS.pgsched, metric: METRIC.fanOutAll, value: fan.allMs, unit: 'ms' },
        {
          system: SYSTEMS.pgsched,
          metric: METRIC.fanOutLatenessP99,
          value: lateness.p99,
          unit: 'ms',
        },
        {
          system: SYSTEMS.pgsched,
          metric: 'fan-out: last fire transaction began after',
          value: fan.lastCreatedMs,
          unit: 'ms',
        },
        {
          system: SYSTEMS.pgsched,
          metric: 'fan-out: tick lateness p50',
          value: lateness.p50,
          unit: 'ms',
        },
      ],
      notes,
      cpuSecondsPerJob: { 'cron tick (scheduler + Postgres)': fan.cpuSeconds / n },
    }
  } finally {
    await sql.end()
  }
}

/**
 * Starts a scheduler on `url` (its database holding the `n` jobs of createScheduledJobs and
 * nothing else), makes them all due at one tick, watches the fan-out and stops the scheduler.
 */
export async function fanOut(ctx: Ctx, sql: SqlPool, url: string, n: number): Promise<FanOut> {
  const scheduler = await startPgschedProcess('scheduler', url, {
    PGSCHED_LEADER_POLL_SECONDS: '1',
    // The readiness line startPgsched waits for is logged at info.
    PGSCHED_LOG_LEVEL: 'info',
  })
  try {
    await until(() => leaderListening(sql), 120_000, 'the scheduler to lead and listen', 100)
    const tick = await dueAllAt(sql)
    ctx.log(`cron: ${n} jobs due at ${tick.toISOString()}; waiting for the fan-out`)
    return await watchFanOut(ctx, sql, tick, n, scheduler.child.pid!)
  } finally {
    await scheduler.stop()
  }
}

/**
 * Creates `n` scheduled no-op jobs with a placeholder schedule, and plans them a day ahead so the
 * scheduler has nothing to plan when it starts (planning first ticks is not the fan-out).
 */
export async function createScheduledJobs(sql: SqlPool, n: number): Promise<void> {
  for (let done = 0; done < n; done += SUBMIT_BATCH) {
    const jobs = Array.from({ length: Math.min(SUBMIT_BATCH, n - done) }, (_, i) => ({
      name: `fan-out-${done + i}`,
      task: 'noop',
      schedule: '0 0 0 1 1 *',
    }))
    await sql`SELECT count(*) FROM pgsched.submit_jobs(${sql.json(jobs)}::jsonb)`
  }
  await sql`UPDATE pgsched.jobs SET next_run_at = now() + interval '1 day'`
}

/**
 * Whether a scheduler leads and its ticker listens for wake-ups: only then does the NOTIFY sent
 * after retargeting the jobs reach it (else it could sleep on an older plan).
 */
async function leaderListening(sql: SqlPool): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`
    SELECT EXISTS (SELECT 1 FROM pgsched.leader) AND EXISTS (
      SELECT 1 FROM pg_stat_activity
      WHERE datname = current_database() AND query ILIKE 'listen%pgsched_scheduler%') AS ok`
  return row!.ok
}

/** Gives every job the tick T (returned) and wakes the leader, which then sleeps until T. */
async function dueAllAt(sql: SqlPool): Promise<Date> {
  const [row] = await sql<{ t: Date }[]>`
    SELECT date_trunc('second', now()) + make_interval(secs => ${LEAD_SECONDS}) AS t`
  const t = row!.t
  const schedule = `${t.getUTCSeconds()} ${t.getUTCMinutes()} ${t.getUTCHours()} * * *`
  await sql`
    UPDATE pgsched.jobs SET schedule = ${schedule}, timezone = 'UTC', next_run_at = ${t},
      updated_at = now()`
  const [late] = await sql<{ late: boolean }[]>`
    SELECT pg_notify('pgsched_scheduler', ''), clock_timestamp() >= ${t} AS late`
  if (late!.late) throw new Error('cron: setting up the tick took longer than its lead time')
  return t
}

/** What the poller saw. */
export interface FanOut {
  tick: Date
  /** From T to the first poll that saw every run. */
  allMs: number
  /** max(runs.created_at) − T. */
  lastCreatedMs: number
  /** CPU of the scheduler and Postgres over the fan-out, without the poller's backend. */
  cpuSeconds: number
  /** The scheduler process's part of cpuSeconds. */
  schedulerCpuSeconds: number
}

/** Polls until all `n` runs of tick `t` are visible; measures CPU from T until then. */
async function watchFanOut(
  ctx: Ctx,
  sql: SqlPool,
  t: Date,
  n: number,
  schedulerPid: number,
): Promise<FanOut> {
  const poller = await sql.reserve()
  try {
    const [me] = await poller<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`
    const pgPids = await ctx.pg.pids()
    // Sleep until just before T, so the CPU window holds the fan-out and little else.
    const [wait] = await poller<{ ms: number }[]>`
      SELECT greatest(0, extract(epoch FROM ${t}::timestamptz - clock_timestamp()) * 1000 - 50)::float8 AS ms`
    await new Promise((r) => setTimeout(r, wait!.ms))
    const all = cpuWindow(() => [schedulerPid, ...pgPids])
    const mine = cpuWindow(() => [me!.pid])
    const scheduler = cpuWindow(() => [schedulerPid])
    let allMs = Number.NaN
    await until(
      async () => {
        const [row] = await poller<{ seen: number; ms: number }[]>`
          SELECT count(*)::int AS seen,
            (extract(epoch FROM statement_timestamp() - ${t}::timestamptz) * 1000)::float8 AS ms
          FROM pgsched.runs r JOIN graphile_worker._private_jobs g ON g.key = 'pgsched_run:' || r.id
          WHERE r.scheduled_for = ${t}`
        if (row!.seen < n) return false
        allMs = row!.ms
        return true
      },
      180_000,
      `${n} runs of the tick`,
      POLL_MS,
    )
    const cpuSeconds = Math.max(0, all.stop() - mine.stop())
    const schedulerCpuSeconds = scheduler.stop()
    const [last] = await poller<{ ms: number }[]>`
      SELECT (extract(epoch FROM max(created_at) - ${t}::timestamptz) * 1000)::float8 AS ms
      FROM pgsched.runs WHERE scheduled_for = ${t}`
    return { tick: t, allMs, lastCreatedMs: last!.ms, cpuSeconds, schedulerCpuSeconds }
  } finally {
    poller.release()
  }
}

/** Exactly one run per job, all for T, each with its Graphile Worker job. */
async function verify(sql: SqlPool, t: Date, n: number): Promise<{ ok: boolean; text: string }> {
  const [c] = await sql<
    { runs: number; jobs: number; at_t: number; executor_jobs: number; transactions: number }[]
  >`
    SELECT count(*)::int AS runs, count(DISTINCT r.job_id)::int AS jobs,
      count(*) FILTER (WHERE r.scheduled_for = ${t})::int AS at_t,
      count(g.id)::int AS executor_jobs,
      count(DISTINCT r.created_at)::int AS transactions
    FROM pgsched.runs r LEFT JOIN graphile_worker._private_jobs g
      ON g.key = 'pgsched_run:' || r.id`
  const ok = c!.runs === n && c!.jobs === n && c!.at_t === n && c!.executor_jobs === n
  return {
    ok,
    text: `${c!.runs} runs for ${c!.jobs} distinct jobs, ${c!.at_t} of them for T (no duplicates, no other tick), ${c!.executor_jobs} with their Graphile Worker job; fired in ${c!.transactions} transactions`,
  }
}

/** Per-run lateness (created_at − scheduled_for) percentiles, in ms. */
async function latenessMs(
  sql: SqlPool,
  t: Date,
): Promise<{ min: number; p50: number; p99: number; max: number }> {
  const rows = await sql<{ ms: number }[]>`
    SELECT (extract(epoch FROM created_at - scheduled_for) * 1000)::float8 AS ms
    FROM pgsched.runs WHERE scheduled_for = ${t}`
  const ms = rows.map((r) => r.ms)
  return {
    min: percentile(ms, 0),
    p50: percentile(ms, 50),
    p99: percentile(ms, 99),
    max: percentile(ms, 100),
  }
}

const cpuMs = (seconds: number) => `${Math.round(seconds * 1000).toLocaleString('en-US')} ms`
