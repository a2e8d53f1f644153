/**
 * @module History at steady state: submit, claim and `GET /v1/jobs/{id}/runs` latency with 30
 * days of run history (10 M runs in daily partitions) against the same on an empty history; the
 * pruner's drop of one day's partition (time, locks held); table sizes over a simulated 60 days.
 *
 * Seeding. History is written set-based as a finished run leaves it: a succeeded run, its attempt
 * and two events (queued → running → succeeded), with explicit day-encoded run ids
 * (`(utc_day_number << 32) | seq`, the partitioning scheme's) and times inside that day, for 100
 * runs per job over the 30 days. `pgsched.maintain_history` creates the days' partitions first.
 *
 * Measured at each depth (empty, a third, full), after VACUUM ANALYZE as autovacuum would have
 * left tables that grew to that size: submit and claim as the depth workload measures them (SQL
 * submit_job one per transaction; Graphile's claim statement then run_start, rolled back), and
 * the API's first page of runs for probe jobs whose own 20 runs are today's, the same rows at
 * every depth: what changes is only the history beside them.
 */
import { mintToken } from '../../src/api/tokens.ts'
import { createSql, type Sql, type SqlPool } from '../../src/db/client.ts'
import { freePort } from '../../test/processes.ts'
import type { Ctx, Curve, Figure, Section, Workload } from '../lib/context.ts'
import { percentile, since, TimeLimit } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { BENCH_SECRET, startPgschedProcess } from '../lib/pgsched.ts'
import { table } from '../lib/report.ts'
import { submitAndClaim } from './depth.ts'

const DAYS = 30
const RUNS_PER_JOB = 100
/** Probe jobs for the GET measurement, each with this many runs of today. */
const PROBE_RUNS = 20
const WARM_UP = 5
/** Seeding slower than this is reported as slow rather than waited for. */
const SEED_LIMIT_MS = 900_000
/** Seq numbers of today's probe runs: far above what today's live runs take from the sequence. */
const PROBE_SEQ = 2 ** 31
const DAY_MS = 86_400_000

const MAINTAIN = 'pgsched.maintain_history(timestamptz,integer,integer,integer)'

/** UTC day number (days since 1970-01-01) of `t`. */
const dayOf = (t: Date) => Math.floor(t.getTime() / DAY_MS)

/** Latencies in ms at one depth. */
interface Point {
  runs: number
  submit: number[]
  claim: number[]
  get: number[]
}

/** Whether this build has the partitioned history's maintenance function. */
async function hasMaintain(sql: SqlPool): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`SELECT to_regprocedure(${MAINTAIN}) IS NOT NULL AS ok`
  return row!.ok
}

/**
 * Drops the (empty) legacy partitions of a fresh database: they hold the rows written before
 * partitioning and cover every run id below the migration's day, so past days could not have
 * their own partitions. A database partitioned for longer than the retention has none left.
 */
async function dropLegacy(sql: SqlPool): Promise<void> {
  await sql`DROP TABLE IF EXISTS pgsched.run_events_legacy, pgsched.run_attempts_legacy,
    pgsched.runs_legacy`
}

/** Creates `n` no-op jobs named `prefix-i`; returns the first id (one statement: ids in a row). */
async function createJobs(sql: SqlPool, prefix: string, n: number): Promise<number> {
  const [row] = await sql<{ first: number }[]>`
    WITH j AS (
      INSERT INTO pgsched.jobs (owner, name, kind, task, status)
      SELECT 'bench', ${prefix} || '-' || g, 'task', 'noop', 'active' FROM generate_series(1, ${n}) g
      RETURNING id)
    SELECT min(id)::bigint AS first FROM j`
  return Number(row!.first)
}

/**
 * Writes `n` succeeded runs of UTC day `day` (ids `day << 32 | seq` for seq `seq0 + 1` …
 * `seq0 + n`, times spread over the day), the i-th for job `firstJob + (i mod jobs)`, each with
 * its attempt and two events.
 */
async function seedDay(
  sql: SqlPool,
  day: number,
  n: number,
  firstJob: number,
  jobs: number,
  seq0 = 0,
): Promise<void> {
  const lo = BigInt(day) * 2n ** 32n + BigInt(seq0) + 1n
  const hi = lo + BigInt(n) - 1n
  // Foreign keys are right by construction; checking them row by row would double the time
  // (session_replication_role = replica skips their triggers; the benchmark's role is superuser).
  await sql.begin(async (tx) => {
    await tx.unsafe('SET LOCAL session_replication_role = replica')
    await insertDay(tx, String(lo), String(hi), firstJob, jobs, day, n)
  })
}

async function insertDay(
  sql: Sql,
  lo: string,
  hi: string,
  firstJob: number,
  jobs: number,
  day: number,
  n: number,
): Promise<void> {
  // Times inside the day, in order of seq; a run takes 10 ms. One statement: the runs are read
  // back from RETURNING, not from the table.
  await sql.unsafe(
    `WITH r AS (
       INSERT INTO pgsched.runs (id, job_id, scheduled_for, status, attempt, available_at, worker,
         started_at, finished_at, exit_code, created_at, updated_at)
       OVERRIDING SYSTEM VALUE
       SELECT id, $3::bigint + (s % $4::bigint), t, 'succeeded', 1, t, 'bench-history',
         t + interval '5 ms', t + interval '15 ms', 0, t, t + interval '15 ms'
       FROM (SELECT $1::bigint + g AS id, g AS s,
               to_timestamp($5::float8 * 86400) + (g * (86400.0 / $6::float8)) * interval '1 second' AS t
             FROM generate_series(0::bigint, $2::bigint - $1::bigint) g) x
       RETURNING id, started_at, finished_at
     ), a AS (
       INSERT INTO pgsched.run_attempts (run_id, attempt, worker, started_at, finished_at, outcome, exit_code)
       SELECT id, 1, 'bench-history', started_at, finished_at, 'succeeded', 0 FROM r
     )
     INSERT INTO pgsched.run_events (run_id, at, from_status, to_status, attempt, worker)
     SELECT r.id, e.at, e.from_status, e.to_status, 1, 'bench-history'
     FROM r, LATERAL (VALUES (r.started_at, 'queued', 'running'),
       (r.finished_at, 'running', 'succeeded')) e(at, from_status, to_status)`,
    [lo, hi, firstJob, jobs, day, n],
  )
}

async function vacuumAnalyze(sql: SqlPool): Promise<void> {
  for (const t of ['pgsched.jobs', 'pgsched.runs', 'pgsched.run_attempts', 'pgsched.run_events']) {
    await sql.unsafe(`VACUUM ANALYZE ${t}`)
  }
  // Seeding leaves up to a gigabyte of dirty pages: without a checkpoint here, the checkpointer
  // writes them out during the measurement and the deep history's p99 measures the bulk load.
  await sql`CHECKPOINT`
}

/** Submit, claim and GET latencies (k each, after WARM_UP). */
async function measure(
  sql: SqlPool,
  api: string,
  token: string,
  probes: number[],
  k: number,
  runs: number,
): Promise<Point> {
  const { submit, take } = await submitAndClaim(sql, k)
  const get: number[] = []
  for (let i = 0; i < WARM_UP + k; i++) {
    const id = probes[i % probes.length]!
    const t0 = performance.now()
    const res = await fetch(`${api}/v1/jobs/${id}/runs`, {
      headers: { authorization: `Bearer ${token}` },
    })
    const body = (await res.json()) as { items?: unknown[] }
    if (i >= WARM_UP) get.push(since(t0))
    if (res.status !== 200) throw new Error(`history: GET runs answered ${res.status}`)
    if (i === 0 && (body.items?.length ?? PROBE_RUNS) !== PROBE_RUNS) {
      throw new Error(`history: a probe job listed ${body.items?.length} runs, not ${PROBE_RUNS}`)
    }
  }
  return { runs, submit, claim: take, get }
}

const p50 = (v: number[]) => percentile(v, 50)
const p99 = (v: number[]) => percentile(v, 99)

/** Relation locks the pruner's transaction holds at its end (all it took, kept until commit). */
interface Pruned {
  ms: number
  commitMs: number
  result: unknown
  partitionsBefore: number
  partitionsAfter: number
  locks: { relation: string; mode: string }[]
}

/** One maintain_history call that expires the oldest seeded day, with the locks it took. */
async function pruneOneDay(sql: SqlPool, pNow: Date): Promise<Pruned> {
  const partitions = async () => {
    const [row] = await sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_partition_tree('pgsched.runs') WHERE isleaf`
    return row!.n
  }
  // The days ahead of pNow first (a retention nothing reaches), so that the call timed drops only.
  await sql`SELECT pgsched.maintain_history(${pNow}, 36500, 3)`
  const partitionsBefore = await partitions()
  const conn = await sql.reserve()
  try {
    await conn`BEGIN`
    const t0 = performance.now()
    const [row] = await conn<{ result: unknown }[]>`
      SELECT pgsched.maintain_history(${pNow}, ${DAYS}, 3) AS result`
    const ms = since(t0)
    const locks = await conn<{ relation: string; mode: string }[]>`
      SELECT coalesce(c.relname, l.relation::text) AS relation, l.mode
      FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation
      WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
        AND coalesce(c.relname, '') NOT LIKE 'pg\\_%'
      ORDER BY 1, 2`
    const t1 = performance.now()
    await conn`COMMIT`
    const commitMs = since(t1)
    return {
      ms,
      commitMs,
      result: row!.result,
      partitionsBefore,
      partitionsAfter: await partitions(),
      locks: [...locks],
    }
  } finally {
    conn.release()
  }
}

/** Size in MB of a table with its partitions, indexes and TOAST. */
async function sizesMb(sql: SqlPool): Promise<Record<string, number>> {
  const [row] = await sql<Record<string, number>[]>`
    SELECT
      (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('pgsched.runs'))::float8 / 1048576 AS runs,
      (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('pgsched.run_attempts'))::float8 / 1048576 AS run_attempts,
      (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('pgsched.run_events'))::float8 / 1048576 AS run_events,
      pg_total_relation_size('pgsched.jobs')::float8 / 1048576 AS jobs`
  return row!
}

/**
 * 60 simulated days at `perDay` runs a day over a fixed set of 1,000 jobs: each day
 * maintain_history at that day's noon (retention 30 days), then the day's runs; sizes after each.
 */
async function simulateDays(
  ctx: Ctx,
  perDay: number,
): Promise<{ days: Record<string, number>[]; leftInDefault: number }> {
  const url = await ctx.pg.createPgschedDatabase('bench_history_sizes')
  const sql = createSql(url, { max: 2, applicationName: 'bench-history' })
  try {
    const jobs = 1000
    await dropLegacy(sql)
    const first = await createJobs(sql, 'history-sim', jobs)
    // Well in the past, so that no simulated day meets today's live partitions.
    const start = dayOf(new Date()) - 70
    const days: Record<string, number>[] = []
    for (let i = 0; i < 60; i++) {
      const day = start + i
      await sql`SELECT pgsched.maintain_history(${new Date(day * DAY_MS + DAY_MS / 2)}, ${DAYS}, 3)`
      await seedDay(sql, day, perDay, first, jobs)
      // What autovacuum does to a partition that has stopped changing.
      await sql.unsafe('ANALYZE pgsched.runs')
      days.push({ day: i + 1, ...(await sizesMb(sql)) })
      if ((i + 1) % 10 === 0) ctx.log(`history: simulated day ${i + 1} of 60`)
    }
    const [row] = await sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pgsched.runs
      WHERE tableoid IN (SELECT relid FROM pg_partition_tree('pgsched.runs') t
        JOIN pg_class c ON c.oid = t.relid
        WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')`
    return { days, leftInDefault: row!.n }
  } finally {
    await sql.end()
  }
}

export const historyDepth: Workload = async (ctx: Ctx): Promise<Section> => {
  const total = ctx.scale(10_000_000, 200_000)
  const k = ctx.scale(200, 50)
  const perDay = Math.round(total / DAYS)
  const jobs = Math.max(1, Math.round(total / RUNS_PER_JOB))
  const url = await ctx.pg.createPgschedDatabase('bench_history')
  const sql = createSql(url, { max: 2, applicationName: 'bench-history' })
  const port = await freePort()
  const api = await startPgschedProcess('api', url, { PORT: String(port) })
  const notes: string[] = []
  const figures: Figure[] = []
  const curves: Curve[] = []
  const fig = (metric: string, value: number, unit: string) =>
    figures.push({ system: SYSTEMS.pgsched, metric, value, unit })
  try {
    const partitioned = await hasMaintain(sql)
    const today = dayOf(new Date())
    const firstDay = today - DAYS
    if (partitioned) {
      // Partitions for the 30 past days and a few ahead, as the leader would have left them.
      await dropLegacy(sql)
      await sql`SELECT pgsched.maintain_history(${new Date(firstDay * DAY_MS)}, ${DAYS}, ${DAYS + 3})`
    } else {
      notes.push(
        'pgsched.maintain_history is not in this build: history was seeded into the unpartitioned tables, and the pruner and the 60-day sizes were not measured.',
      )
    }
    const token = await mintToken(BENCH_SECRET, 'bench', ['submitter'], 3600)
    const base = `http://127.0.0.1:${port}`
    const firstSeeded = await createJobs(sql, 'history', jobs)
    const probeFirst = await createJobs(sql, 'history-probe', k)
    await seedDay(sql, today, k * PROBE_RUNS, probeFirst, k, PROBE_SEQ)
    const probes = Array.from({ length: k }, (_, i) => probeFirst + i)
    await vacuumAnalyze(sql)

    const points: Point[] = [await measure(sql, base, token, probes, k, 0)]
    ctx.log('history: empty history measured')
    let seedMs = 0
    let seededDays = 0
    for (const depth of [Math.round(DAYS / 3), DAYS]) {
      const t1 = performance.now()
      // Two days at a time, one per connection of the pool: both cores.
      let next = seededDays
      await Promise.all(
        [0, 1].map(async () => {
          while (next < depth) {
            const d = next++
            await seedDay(sql, firstDay + d, perDay, firstSeeded, jobs)
            if (seedMs + since(t1) > SEED_LIMIT_MS) {
              next = DAYS // the other connection stops too
              throw new TimeLimit(
                'the history to be seeded',
                SEED_LIMIT_MS,
                `${d + 1} of ${DAYS} days`,
              )
            }
          }
        }),
      )
      seedMs += since(t1)
      seededDays = depth
      const seeded = perDay * depth
      ctx.log(`history: ${seeded.toLocaleString('en-US')} runs seeded; vacuuming`)
      await vacuumAnalyze(sql)
      points.push(await measure(sql, base, token, probes, k, seeded))
      ctx.log(`history: measured at ${depth} days`)
    }
    const seedSeconds = seedMs / 1000

    const empty = points[0]!
    const full = points.at(-1)!
    for (const [what, key, ratio] of [
      ['submit', 'submit', METRIC.historySubmitRatio],
      ['claim', 'claim', METRIC.historyClaimRatio],
      ['GET /v1/jobs/{id}/runs', 'get', METRIC.historyGetRatio],
    ] as const) {
      fig(`${what} p50, empty history`, p50(empty[key]), 'ms')
      fig(`${what} p50, full history`, p50(full[key]), 'ms')
      fig(`${what} p99, empty history`, p99(empty[key]), 'ms')
      fig(`${what} p99, full history`, p99(full[key]), 'ms')
      fig(ratio, p50(full[key]) / p50(empty[key]), '×')
      curves.push({
        name: `${what} p50`,
        xUnit: 'runs of history',
        unit: 'ms',
        points: points.map((p) => [p.runs, p50(p[key])]),
      })
    }
    notes.push(
      `History: ${total.toLocaleString('en-US')} succeeded runs over the ${DAYS} days before today (${perDay.toLocaleString('en-US')} a day, ${RUNS_PER_JOB} per job over ${jobs.toLocaleString('en-US')} jobs), each with its attempt and two events, written set-based with day-encoded ids in ${seedSeconds.toFixed(0)} s, VACUUM ANALYZE of jobs, runs, run_attempts and run_events and a CHECKPOINT at each depth measured (${points.map((p) => p.runs.toLocaleString('en-US')).join(', ')} runs).${partitioned ? " One partition per day, created by pgsched.maintain_history before seeding; the fresh database's legacy partitions (empty; they cover every run id below the migration's day) were dropped first, as a database partitioned for longer than the retention has none." : ''}`,
      `At each depth, ${k} of each, one after the other, after ${WARM_UP} not counted: pgsched.submit_job (one per transaction, durable commit included); a claim (Graphile Worker's claim statement then pgsched.run_start, rolled back, as the depth section measures it); GET /v1/jobs/{id}/runs over HTTP with a submitter token, for ${k} probe jobs with ${PROBE_RUNS} runs each, all today's, so that every depth lists the same rows (the first page).`,
    )

    if (partitioned) {
      // Tomorrow's noon expires the oldest seeded day.
      const pruned = await pruneOneDay(sql, new Date((today + 1) * DAY_MS + DAY_MS / 2))
      fig(METRIC.historyPruneMs, pruned.ms, 'ms')
      fig('pruner: its commit', pruned.commitMs, 'ms')
      fig(
        'pruner: runs partitions before − after',
        pruned.partitionsBefore - pruned.partitionsAfter,
        'partitions',
      )
      // The parents' locks are what other sessions wait for; the rest is counted.
      const parents = ['jobs', 'runs', 'run_attempts', 'run_events']
      const byMode = new Map<string, { named: string[]; others: number }>()
      for (const l of pruned.locks) {
        const m = byMode.get(l.mode) ?? { named: [], others: 0 }
        if (parents.includes(l.relation)) m.named.push(l.relation)
        else m.others++
        byMode.set(l.mode, m)
      }
      const lockText = [...byMode]
        .map(
          ([mode, m]) =>
            `${mode} on ${[...m.named, ...(m.others ? [`${m.others} partitions, indexes or dropped relations`] : [])].join(', ')}`,
        )
        .join('; ')
      fig(METRIC.historyPruneHeldMs, pruned.ms + pruned.commitMs, 'ms')
      notes.push(
        `Pruner: pgsched.maintain_history(p_now => tomorrow noon, retention ${DAYS}, 3 days ahead) in its own transaction on ${total.toLocaleString('en-US')} runs of history: ${pruned.ms.toFixed(1)} ms, commit ${pruned.commitMs.toFixed(1)} ms; runs partitions ${pruned.partitionsBefore} → ${pruned.partitionsAfter}; it returned \`${JSON.stringify(pruned.result)}\`. Relation locks its transaction held at the end (every lock it took, kept until commit, so for the call and its commit): ${lockText || 'none'}. Partitions ahead of that day were created by an earlier call, so this one only drops.`,
      )
      ctx.log('history: pruner measured')
      const sim = await simulateDays(ctx, Math.max(100, Math.round(perDay / 16)))
      const tables = ['runs', 'run_attempts', 'run_events', 'jobs']
      for (const t of tables) {
        curves.push({
          name: t,
          xUnit: 'simulated day',
          unit: 'MB',
          points: sim.days.map((d) => [d.day!, d[t]!]),
        })
      }
      const sum = (d: Record<string, number>) => tables.reduce((s, t) => s + d[t]!, 0)
      const at = (day: number) => sum(sim.days[day - 1]!)
      fig(METRIC.historySizeDay30, at(30), 'MB')
      fig(METRIC.historySizeDay60, at(60), 'MB')
      fig(METRIC.historySizeRatio, at(60) / at(30), '×')
      notes.push(
        `Sizes: a fresh database, 1,000 jobs, 60 simulated days at ${Math.max(100, Math.round(perDay / 16)).toLocaleString('en-US')} runs a day (the history above ÷ 16), each day pgsched.maintain_history at that day's noon (retention ${DAYS} days) and then the day's runs; runs, run_attempts, run_events (all partitions, indexes, TOAST) and jobs after each day. Runs left in a DEFAULT partition: ${sim.leftInDefault}.`,
      )
    }
  } finally {
    await api.stop()
    await sql.end()
  }
  const sizes = curves.filter((c) => c.unit === 'MB')
  return {
    id: 'history',
    title: 'History at steady state: latency with 30 days of runs, pruning, table sizes',
    figures,
    curves,
    extra: sizes.length
      ? table(
          ['simulated day', ...sizes.map((c) => `${c.name} MB`)],
          [10, 20, 30, 40, 50, 60].map((d) => [
            String(d),
            ...sizes.map((c) => (c.points[d - 1]?.[1] ?? Number.NaN).toFixed(1)),
          ]),
        )
      : undefined,
    notes,
  }
}
