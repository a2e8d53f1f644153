/**
 * @module Queue depth: submit and claim latency with a deep backlog of runnable runs, against
 * the same with an (almost) empty queue, on the same database and connection.
 *
 * Submit: one `pgsched.submit_job` per statement (its own transaction, commit included), one
 * after the other on one connection. Claim: what a pgsched worker does to take a run, replayed
 * by hand so that it can be rolled back and the backlog keeps its depth: Graphile Worker's claim
 * statement (its getJobs.js query with batch size 1 and no forbidden flags, as pgsched's worker
 * runs it at degradation level 0), then `pgsched.run_start` for the run it returned, each timed,
 * in a transaction that is rolled back. Commits are left out of the claim: a commit is a WAL
 * flush, whose cost does not depend on depth. No worker or scheduler runs.
 */

import { createSql, type Sql, type SqlPool } from '../../src/db/client.ts'
import type { Ctx, Section, Workload } from '../lib/context.ts'
import { percentile, since } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { seedQueuedRuns } from '../lib/pgsched.ts'

/** Measurements before each series that are not counted (connection, plans, caches). */
const WARM_UP = 5
/** The backlog is seeded in slices of this many runs, with a progress line after each. */
const SEED_SLICE = 100_000

/** Latencies in ms of one series. */
export interface Series {
  submit: number[]
  /** Graphile Worker's claim statement alone. */
  claim: number[]
  /** Claim statement, then pgsched.run_start: taking a run, commit excluded. */
  take: number[]
}

export const queueDepth: Workload = async (ctx: Ctx): Promise<Section> => {
  const k = ctx.scale(300, 100)
  const depth = ctx.scale(1_000_000, 100_000)
  const url = await ctx.pg.createPgschedDatabase('bench_depth')
  // One connection: every statement timed goes the same way.
  const sql = createSql(url, { max: 1, applicationName: 'bench-depth' })
  try {
    const empty = await submitAndClaim(sql, k)
    const emptyDepth = await runnable(sql)
    ctx.log(`depth: empty queue measured (${emptyDepth} runnable)`)

    const t0 = performance.now()
    for (let done = 0; done < depth; done += SEED_SLICE) {
      await seedQueuedRuns(sql, Math.min(SEED_SLICE, depth - done))
      ctx.log(`depth: ${Math.min(depth, done + SEED_SLICE).toLocaleString('en-US')} runs queued`)
    }
    const seedSeconds = since(t0) / 1000
    const t1 = performance.now()
    // What autovacuum would have done to tables this size by the time they got there.
    for (const table of ['pgsched.runs', 'pgsched.jobs', 'graphile_worker._private_jobs']) {
      await sql.unsafe(`VACUUM ANALYZE ${table}`)
    }
    const vacuumSeconds = since(t1) / 1000
    ctx.log(
      `depth: seeded in ${seedSeconds.toFixed(0)} s, vacuumed in ${vacuumSeconds.toFixed(0)} s`,
    )

    const deepDepth = await runnable(sql)
    const deep = await submitAndClaim(sql, k)
    ctx.log(`depth: deep queue measured (${deepDepth.toLocaleString('en-US')} runnable)`)

    const figures = [...figuresOf('empty queue', empty), ...figuresOf('deep queue', deep)].map(
      (f) => ({ system: SYSTEMS.pgsched, unit: 'ms', ...f }),
    )
    return {
      id: 'depth',
      title: 'Queue depth: latency with a deep backlog vs an empty queue',
      figures,
      notes: [
        `Deep queue: ${deepDepth.toLocaleString('en-US')} runnable runs (${depth.toLocaleString('en-US')} seeded in bulk as submit_jobs leaves them: job, run and Graphile Worker job each), against ${emptyDepth} in the "empty" queue (the runs its own submissions left). Seeding took ${seedSeconds.toFixed(0)} s; then VACUUM ANALYZE of pgsched.runs, pgsched.jobs and graphile_worker._private_jobs (${vacuumSeconds.toFixed(0)} s), as autovacuum would have done to tables that grew to this size.`,
        `Submit: ${k} calls of pgsched.submit_job (task noop, runnable at once), one per transaction, one after the other on one connection, durable commit included.`,
        `Claim: ${k} times, in a transaction rolled back afterwards so the backlog keeps its depth: Graphile Worker 0.18's claim statement (getJobs.js, batch size 1, no forbidden flags, named-queue strategy 2), then pgsched.run_start for the run it returned. "claim" is both statements (what a pgsched worker does to take a run); "Graphile claim statement" is the first alone. Commits excluded: a WAL flush, the same at any depth.`,
        `First ${WARM_UP} of each series not counted (connection, plans, caches). No worker or scheduler ran. Rolling back means the claims always find the head of the queue clean: what a backlog being drained leaves behind (dead index entries ahead of the head until vacuum) is not part of this figure.`,
      ],
    }
  } finally {
    await sql.end()
  }
}

/** The figures of one series, named after the metrics the targets read. */
function figuresOf(
  where: 'empty queue' | 'deep queue',
  s: Series,
): { metric: string; value: number }[] {
  const empty = where === 'empty queue'
  return [
    {
      metric: empty ? METRIC.submitEmptyP50 : METRIC.submitDeepP50,
      value: percentile(s.submit, 50),
    },
    { metric: `submit p99, ${where}`, value: percentile(s.submit, 99) },
    { metric: empty ? METRIC.claimEmptyP50 : METRIC.claimDeepP50, value: percentile(s.take, 50) },
    { metric: `claim p99, ${where}`, value: percentile(s.take, 99) },
    { metric: `Graphile claim statement p50, ${where}`, value: percentile(s.claim, 50) },
    { metric: `Graphile claim statement p99, ${where}`, value: percentile(s.claim, 99) },
  ]
}

/** Measures `k` submissions, then `k` claims (after WARM_UP of each). */
export async function submitAndClaim(sql: SqlPool, k: number): Promise<Series> {
  const out: Series = { submit: [], claim: [], take: [] }
  for (let i = 0; i < WARM_UP + k; i++) {
    const t0 = performance.now()
    await sql`SELECT pgsched.submit_job(name => 'depth', task => 'noop')`
    if (i >= WARM_UP) out.submit.push(since(t0))
  }
  const [task] = await sql<{ id: number }[]>`
    SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'pgsched_run'`
  const conn = await sql.reserve()
  try {
    for (let i = 0; i < WARM_UP + k; i++) {
      await conn`BEGIN`
      const t0 = performance.now()
      const [job] = await claimQuery(conn, task!.id)
      const claimed = since(t0)
      if (!job) throw new Error('depth: the claim found no runnable job')
      const { run_id, attempt } = job.payload
      const started =
        await conn`SELECT * FROM pgsched.run_start(${run_id}, ${attempt}, 'bench-depth')`
      const took = since(t0)
      if (started.length !== 1) throw new Error(`depth: run_start did not start run ${run_id}`)
      await conn`ROLLBACK`
      if (i >= WARM_UP) {
        out.claim.push(claimed)
        out.take.push(took)
      }
    }
  } finally {
    conn.release()
  }
  return out
}

/**
 * Graphile Worker 0.18's claim statement (dist/sql/getJobs.js, constructQuery with batchSize 1,
 * no flags, database time), with its pool id and task ids as parameters.
 */
function claimQuery(sql: Sql, taskId: number) {
  return sql<{ id: number; payload: { run_id: number; attempt: number } }[]>`
    with j as (
      select jobs.job_queue_id, jobs.priority, jobs.run_at, jobs.id
        from graphile_worker._private_jobs as jobs
        where jobs.is_available = true
        and run_at <= now()
        and task_id = any(${[taskId]}::int[])
        and (
          jobs.job_queue_id is null
          or
          jobs.job_queue_id in (
            select id
            from graphile_worker._private_job_queues as job_queues
            where job_queues.is_available = true
            for update
            skip locked
          )
        )
        order by priority asc, run_at asc
        limit 1
        for update
        skip locked
    ),
    q as (
      update graphile_worker._private_job_queues as job_queues
        set
          locked_by = ${'bench-depth-pool'}::text,
          locked_at = now()
        from j
        where job_queues.id = j.job_queue_id
    )
      update graphile_worker._private_jobs as jobs
        set
          attempts = jobs.attempts + 1,
          locked_by = ${'bench-depth-pool'}::text,
          locked_at = now()
        from j
        where jobs.id = j.id
        returning *`
}

/** Runnable executor jobs now: the queue's depth. */
async function runnable(sql: SqlPool): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM graphile_worker._private_jobs
    WHERE is_available AND run_at <= now()`
  return row!.n
}
