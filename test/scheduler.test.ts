/**
 * The scheduler role: leader election over the advisory lock, and the ticker that turns due
 * schedule ticks into runs, exactly once per (job, tick) even with two tickers at once.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { cronNext, planJob } from '../src/core/cron.ts'
import { silentLogger } from '../src/core/types.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import type { Scheduler, SchedulerOptions } from '../src/scheduler/index.ts'
import { Ticker, tickOnce } from '../src/scheduler/ticker.ts'
import { type Signal, setup, signal, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
/** What a test started; stopped after it so the next test has the database to itself. */
let started: { stop(): Promise<unknown> }[] = []
let pools: SqlPool[] = []

beforeAll(async () => {
  t = await setup()
})
afterEach(async () => {
  for (const s of started.reverse()) await s.stop()
  started = []
  for (const p of pools) await p.end()
  pools = []
  // Leave no active schedule behind for the next test's tickOnce to fire.
  await t.sql`SELECT pgsched.cancel_job(id) FROM pgsched.jobs WHERE status IN ('active', 'paused')`
})
afterAll(() => t?.close())

function startScheduler(o: Partial<SchedulerOptions> = {}): Scheduler {
  const s = t.startScheduler(o)
  started.push(s)
  return s
}

function pool(): SqlPool {
  const p = createSql(t.url, { max: 4 })
  pools.push(p)
  return p
}

/** Submits a scheduled job through the SQL API and returns its id. */
async function submitCron(name: string, schedule: string, timezone = 'UTC'): Promise<number> {
  const [row] = await t.sql<{ id: number }[]>`
    SELECT pgsched.submit_job(name => ${name}, command => 'true', schedule => ${schedule},
      timezone => ${timezone}) AS id`
  return row!.id
}

const leaderRow = async () => {
  const [row] = await t.sql<{ holder: string; term: number }[]>`
    SELECT holder, term FROM pgsched.leader`
  return row
}

/** Backends holding the leader advisory lock (objid/classid split the 64-bit key). */
const lockHolders = async () => {
  const [row] = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND database = (
      SELECT oid FROM pg_database WHERE datname = current_database())`
  return row!.n
}

describe('leader election', () => {
  it('elects exactly one of two schedulers, and the other takes over when it stops', async () => {
    // Who led after each poll of either elector: the invariant is checked whenever it can change.
    const leaders: number[] = []
    const polls = { a: signal(), b: signal() }
    const onPoll = (own: Signal) => (service: string) => {
      if (service !== 'elector') return
      leaders.push([a, b].filter((s) => s.isLeader).length)
      own.fire()
    }
    const a: Scheduler = startScheduler({ onPass: onPoll(polls.a) })
    const b: Scheduler = startScheduler({ onPass: onPoll(polls.b) })
    const leader = await waitFor(
      () => (a.isLeader ? a : b.isLeader ? b : undefined),
      5000,
      'a leader',
    )
    const follower = leader === a ? b : a
    // Several follower polls pass: the follower never leads as well.
    const since = leaders.length
    await (follower === a ? polls.a : polls.b).next(4, 5000, 'four follower polls')
    expect(leaders.slice(since).filter((n) => n !== 1)).toEqual([])
    expect([a.isLeader, b.isLeader].filter(Boolean)).toHaveLength(1)
    expect(await lockHolders()).toBe(1)
    const first = await waitFor(leaderRow, 2000, 'the pgsched.leader row')
    expect(first.term).toBeGreaterThanOrEqual(1)
    expect(first.holder).toMatch(/^test:/)

    const stoppedAt = Date.now()
    await leader.stop()
    expect(leader.isLeader).toBe(false)
    await waitFor(() => follower.isLeader, 3000, 'the follower to take over')
    expect(Date.now() - stoppedAt).toBeLessThan(3000)
    expect(leader.isLeader).toBe(false)
    const second = await waitFor(
      async () => {
        const row = await leaderRow()
        return row && row.term > first.term ? row : undefined
      },
      2000,
      'a new term',
    )
    expect(second.term).toBe(first.term + 1)
    expect(await lockHolders()).toBe(1)
  })
})

describe('passes on demand', () => {
  it("runOnce runs a leader service's pass at once, and onPass reports every pass", async () => {
    const passes: string[] = []
    const s = startScheduler({
      // The degrader's own loop would not pass for 10 s.
      degradeIntervalMs: 60_000,
      onPass: (service, error) => passes.push(error ? `${service} failed` : service),
    })
    await t.sql`UPDATE pgsched.degradation SET measured_at = NULL`
    await s.runOnce('degrader')
    expect(passes.filter((p) => p.startsWith('degrader'))).toEqual(['degrader'])
    const [row] = await t.sql<{ measured: boolean }[]>`
      SELECT measured_at IS NOT NULL AS measured FROM pgsched.degradation`
    expect(row!.measured).toBe(true)
    // The elector reports its polls, and the ticker its passes once this scheduler leads.
    await waitFor(() => passes.includes('ticker'), 5000, 'a ticker pass')
    expect(passes).toContain('elector')
    expect(passes.filter((p) => p.endsWith('failed'))).toEqual([])
  })
})

describe('ticks', () => {
  it('creates a run for each tick of a seconds schedule while a scheduler leads', async () => {
    const s = startScheduler()
    await waitFor(() => s.isLeader, 5000, 'leadership')
    const id = await submitCron('every-second', '* * * * * *')
    const [job] = await t.sql<{ schedule_base_at: Date }[]>`
      SELECT schedule_base_at FROM pgsched.jobs WHERE id = ${id}`

    const nextRunAt = async () => {
      const [row] = await t.sql<{ next_run_at: Date | null }[]>`
        SELECT next_run_at FROM pgsched.jobs WHERE id = ${id}`
      return row!.next_run_at
    }
    const runsOf = () =>
      t.sql<{ scheduled_for: Date; status: string; executor_job_id: number | null }[]>`
        SELECT r.scheduled_for, r.status, (SELECT gk.id FROM graphile_worker._private_jobs gk WHERE gk.key = 'pgsched_run:' || r.id) AS executor_job_id
        FROM pgsched.runs r WHERE r.job_id = ${id} ORDER BY r.scheduled_for`

    await waitFor(async () => (await runsOf()).length >= 1, 5000, 'the first run')
    const earlierNext = await nextRunAt()
    const runs = await waitFor(
      async () => {
        const rows = await runsOf()
        return rows.length >= 4 ? rows : undefined
      },
      8000,
      'four runs',
    )
    const laterNext = await nextRunAt()

    const times = runs.map((r) => r.scheduled_for.getTime())
    for (const ms of times) expect(ms % 1000).toBe(0)
    // The first tick is the first whole second after submission; each next one a second later.
    expect(times[0]).toBe(cronNext('* * * * * *', 'UTC', job!.schedule_base_at).getTime())
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBe(1000)
    for (const r of runs) {
      expect(r.status).toBe('queued')
      expect(r.executor_job_id).not.toBeNull()
    }
    expect(earlierNext).not.toBeNull()
    expect(laterNext!.getTime()).toBeGreaterThan(earlierNext!.getTime())
    expect(laterNext!.getTime()).toBeGreaterThan(times.at(-1)!)
    expect(laterNext!.getTime() % 1000).toBe(0)
  })

  it('never fires a tick twice with two tickers at once', async () => {
    const [{ ids }] = (await t.sql`
      SELECT array_agg(pgsched.submit_job(
        name => 'many-' || i, command => 'true', schedule => '* * * * * *')) AS ids
      FROM generate_series(1, 200) i`) as unknown as [{ ids: number[] }]
    expect(ids).toHaveLength(200)
    // A whole second, as the planner writes it (sub-millisecond values: see the test below).
    const makeDue = () => t.sql`
      UPDATE pgsched.jobs SET next_run_at = date_trunc('second', now()) - interval '1 second'
      WHERE id = ANY(${ids})`
    const sqlA = pool()
    const sqlB = pool()

    // Concurrent passes from two pools, in small batches so that they interleave; every other
    // round makes all jobs due again, so both re-plan ticks that may already have fired.
    let looked = 0
    for (let round = 0; round < 12; round++) {
      if (round % 2 === 0) await makeDue()
      for (let pass = 0; ; pass++) {
        if (pass > 100) throw new Error(`round ${round}: jobs stay due after 100 passes`)
        const seen = await Promise.all([
          tickOnce(sqlA, silentLogger, 25),
          tickOnce(sqlB, silentLogger, 25),
          tickOnce(sqlA, silentLogger, 25),
          tickOnce(sqlB, silentLogger, 25),
        ])
        const n = seen.reduce((x, y) => x + y, 0)
        looked += n
        if (n === 0) break
      }
    }
    expect(looked).toBeGreaterThanOrEqual(200 * 6)

    // Then two Ticker loops against the same jobs until every job has ticked a few more times.
    await makeDue()
    const [{ from }] = (await t.sql`SELECT now() AS from`) as unknown as [{ from: Date }]
    const tickerA = new Ticker({ sql: sqlA, logger: silentLogger, batchSize: 50 })
    const tickerB = new Ticker({ sql: sqlB, logger: silentLogger, batchSize: 50 })
    started.push(tickerA, tickerB)
    await Promise.all([tickerA.start(), tickerB.start()])
    await waitFor(
      async () => {
        const [row] = await t.sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM (
            SELECT job_id FROM pgsched.runs
            WHERE job_id = ANY(${ids}) AND scheduled_for > ${from}
            GROUP BY job_id HAVING count(*) >= 3) x`
        return row!.n === 200
      },
      10_000,
      'three ticks of every job from both tickers',
    )
    await Promise.all([tickerA.stop(), tickerB.stop()])

    const dupes = await t.sql`
      SELECT job_id, scheduled_for, count(*) FROM pgsched.runs
      GROUP BY 1, 2 HAVING count(*) > 1`
    expect(dupes).toEqual([])
    const [cover] = await t.sql<{ jobs: number; runs: number; executor: number }[]>`
      SELECT count(DISTINCT r.job_id)::int AS jobs, count(*)::int AS runs,
        count(DISTINCT (SELECT gk.id FROM graphile_worker._private_jobs gk WHERE gk.key = 'pgsched_run:' || r.id))::int AS executor
      FROM pgsched.runs r WHERE r.job_id = ANY(${ids})`
    expect(cover!.jobs).toBe(200)
    // Every run got exactly one executor job of its own.
    expect(cover!.executor).toBe(cover!.runs)
    const [off] = await t.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pgsched.runs
      WHERE job_id = ANY(${ids}) AND scheduled_for <> date_trunc('second', scheduled_for)`
    expect(off!.n).toBe(0)
  })

  it('after downtime fires once, for the latest missed tick', async () => {
    const id = await submitCron('every-10s', '*/10 * * * * *')
    await t.sql`
      UPDATE pgsched.jobs SET next_run_at = date_trunc('second', now()) - interval '5 minutes'
      WHERE id = ${id}`

    await tickOnce(t.sql, silentLogger)

    const runs = await t.sql<{ scheduled_for: Date; created_at: Date }[]>`
      SELECT scheduled_for, created_at FROM pgsched.runs WHERE job_id = ${id}`
    expect(runs).toHaveLength(1)
    // created_at is now() of the tick's transaction: the instant the ticker planned against.
    const now = runs[0]!.created_at.getTime()
    const latest = Math.floor(now / 10_000) * 10_000
    expect(runs[0]!.scheduled_for.getTime()).toBe(latest)
    const [job] = await t.sql<{ next_run_at: Date }[]>`
      SELECT next_run_at FROM pgsched.jobs WHERE id = ${id}`
    expect(job!.next_run_at.getTime()).toBe(latest + 10_000)
    expect(job!.next_run_at.getTime()).toBeGreaterThan(now)

    // Nothing more is due until that next boundary.
    await tickOnce(t.sql, silentLogger)
    const [after] = await t.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pgsched.runs
      WHERE job_id = ${id} AND scheduled_for <= ${new Date(latest)}`
    expect(after!.n).toBe(1)
  })

  it('sleeps while no schedule is active, instead of passing again at once', async () => {
    const passes: unknown[] = []
    const ticker = new Ticker({
      sql: t.sql,
      logger: silentLogger,
      onPass: (error) => passes.push(error),
    })
    await ticker.start()
    started.push(ticker)
    await waitFor(() => passes.length > 0, 5_000, 'the first pass')
    await new Promise((r) => setTimeout(r, 500))
    // One pass, then the safety-net sleep (30 s) or a NOTIFY: it used to pass every millisecond.
    expect(passes).toEqual([undefined])
  })

  it('fires a due job whose next_run_at has sub-millisecond precision', async () => {
    // An operator (or any tool) may write next_run_at with now(): microseconds, as Postgres keeps.
    const id = await submitCron('micro', '*/10 * * * * *')
    await t.sql`
      UPDATE pgsched.jobs
      SET next_run_at = date_trunc('second', now()) - interval '1 minute' + interval '123.456 ms'
      WHERE id = ${id}`

    expect(await tickOnce(t.sql, silentLogger)).toBe(1)

    const [job] = await t.sql<{ next_run_at: Date; due: boolean; runs: number }[]>`
      SELECT next_run_at, next_run_at <= now() AS due,
        (SELECT count(*)::int FROM pgsched.runs WHERE job_id = ${id}) AS runs
      FROM pgsched.jobs WHERE id = ${id}`
    expect(job!.runs).toBe(1)
    expect(job!.due).toBe(false)
    expect(job!.next_run_at.getTime() % 10_000).toBe(0)
  })
})

describe('planJob', () => {
  it('plans an unplanned job at its first tick after schedule_base_at, firing nothing', () => {
    const base = new Date('2024-05-01T12:00:03.250Z')
    expect(
      planJob({
        id: 7,
        schedule: '*/10 * * * * *',
        timezone: 'UTC',
        schedule_base_at: base,
        next_run_at: null,
        now: new Date('2024-05-01T12:34:56Z'),
      }),
    ).toEqual({ jobId: 7, expected: null, tick: null, next: new Date('2024-05-01T12:00:10Z') })
    // In the job's time zone: 09:00 in New York on the day daylight saving time starts.
    expect(
      planJob({
        id: 8,
        schedule: '0 9 * * *',
        timezone: 'America/New_York',
        schedule_base_at: new Date('2024-03-10T05:00:00Z'),
        next_run_at: null,
        now: new Date('2024-03-10T05:00:00Z'),
      }),
    ).toMatchObject({ tick: null, next: new Date('2024-03-10T13:00:00Z') })
  })

  it('tickOnce only plans a new job, even when its first tick is already past', async () => {
    const id = await submitCron('planned', '* * * * * *')
    // As if the job was submitted an hour ago and no scheduler has seen it since.
    await t.sql`
      UPDATE pgsched.jobs SET schedule_base_at = now() - interval '1 hour' WHERE id = ${id}`
    const [job] = await t.sql<{ schedule_base_at: Date }[]>`
      SELECT schedule_base_at FROM pgsched.jobs WHERE id = ${id}`

    await tickOnce(t.sql, silentLogger)

    const [planned] = await t.sql<{ next_run_at: Date | null; runs: number }[]>`
      SELECT next_run_at, (SELECT count(*)::int FROM pgsched.runs WHERE job_id = ${id}) AS runs
      FROM pgsched.jobs WHERE id = ${id}`
    expect(planned!.runs).toBe(0)
    expect(planned!.next_run_at).toEqual(cronNext('* * * * * *', 'UTC', job!.schedule_base_at))

    // The next pass fires the planned (past) tick once, as its latest missed tick.
    await tickOnce(t.sql, silentLogger)
    const runs = await t.sql`SELECT scheduled_for FROM pgsched.runs WHERE job_id = ${id}`
    expect(runs).toHaveLength(1)
  })
})
