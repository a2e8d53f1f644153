/**
 * History without bloat: runs, run_attempts and run_events partitioned by UTC day (migration
 * 000005), the leader's maintenance (pgsched.maintain_history, src/scheduler/pruner.ts), the
 * queue-depth estimate and the orphan sweep behind a deep backlog. Time is moved with p_now.
 * The tests share one database and run in order: the last one moves the clock 40 days on.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { resolveConfig } from '../src/core/config.ts'
import { historyMaintain } from '../src/db/queries/history.ts'
import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle

beforeAll(async () => {
  t = await setup()
})
afterAll(() => t.close())

const TABLES = ['runs', 'run_attempts', 'run_events'] as const
const DAY_MS = 86_400_000

/** The partition suffix of the UTC day `days` from now: _dYYYYMMDD. */
function suffix(days = 0): string {
  return `_d${new Date(Date.now() + days * DAY_MS).toISOString().slice(0, 10).replaceAll('-', '')}`
}

async function partitions(table: string): Promise<string[]> {
  const rows = await t.sql<{ name: string }[]>`
    SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = ${`pgsched.${table}`}::regclass ORDER BY 1`
  return rows.map((r) => r.name)
}

/** A one-off job with its queued run (and executor job); returns the ids. */
async function submit(name: string): Promise<{ job: number; run: number }> {
  const [j] = await t.sql<{ id: number }[]>`
    SELECT pgsched.submit_job(name => ${name}, command => 'true') AS id`
  const [r] = await t.sql<{ id: number }[]>`SELECT id FROM pgsched.runs WHERE job_id = ${j!.id}`
  return { job: j!.id, run: r!.id }
}

it('creates today and the next three days for all three tables, with a DEFAULT partition', async () => {
  await historyMaintain(t.sql)
  for (const table of TABLES) {
    const names = await partitions(table)
    for (const days of [0, 1, 2, 3]) expect(names).toContain(`${table}${suffix(days)}`)
    expect(names).toContain(`${table}_default`)
  }
  const { run } = await submit('lands-today')
  const [where] = await t.sql<{ partition: string }[]>`
    SELECT tableoid::regclass::text AS partition FROM pgsched.runs WHERE id = ${run}`
  expect(where!.partition).toBe(`pgsched.runs${suffix()}`)
  const events = await t.sql<{ partition: string }[]>`
    SELECT DISTINCT tableoid::regclass::text AS partition FROM pgsched.run_events WHERE run_id = ${run}`
  expect(events).toEqual([{ partition: `pgsched.run_events${suffix()}` }])
  // Day-encoded: the id's high 32 bits are the UTC day.
  expect(Math.floor(run / 2 ** 32)).toBe(Math.floor(Date.now() / DAY_MS))
})

it('runs on the leader: at leadership start it creates the partitions missing', async () => {
  for (const table of TABLES) await t.sql.unsafe(`DROP TABLE pgsched.${table}${suffix(3)}`)
  const passes: string[] = []
  const s = t.startScheduler({
    historyRetentionDays: 30,
    onPass: (service, error) => passes.push(error ? `${service}: ${error}` : service),
  })
  await expect
    .poll(() => passes.filter((p) => p.startsWith('pruner')), { timeout: 10_000 })
    .toEqual(['pruner'])
  for (const table of TABLES) expect(await partitions(table)).toContain(`${table}${suffix(3)}`)
  await s.stop()
})

it('takes the retention from PGSCHED_HISTORY_RETENTION_DAYS (default 30), refusing a bad value', () => {
  expect(resolveConfig({}).historyRetentionDays).toBe(30)
  expect(resolveConfig({ PGSCHED_HISTORY_RETENTION_DAYS: '7' }).historyRetentionDays).toBe(7)
  for (const bad of ['0', '-1', 'thirty', '2.5']) {
    expect(() => resolveConfig({ PGSCHED_HISTORY_RETENTION_DAYS: bad })).toThrow(
      /PGSCHED_HISTORY_RETENTION_DAYS must be an integer from 1 to/,
    )
  }
})

it('refuses bad arguments to maintain_history, changing nothing', async () => {
  const before = await partitions('runs')
  await expect(t.sql`SELECT pgsched.maintain_history(p_retention_days => 0)`).rejects.toThrow(
    /p_retention_days must be at least 1/,
  )
  expect(await partitions('runs')).toEqual(before)
})

it('finds an orphaned run behind a deep healthy backlog, with a small batch', async () => {
  const { job } = await submit('backlog')
  // 5,000 healthy queued runs, older than the orphan, each with its executor job.
  const [backlog] = await t.sql<{ ids: number[] }[]>`
    WITH ins AS (
      INSERT INTO pgsched.runs (job_id, scheduled_for, available_at)
      SELECT ${job}, now() - make_interval(secs => i), now() - interval '2 hours' - make_interval(secs => i)
      FROM generate_series(1, 5000) i RETURNING id
    )
    SELECT array_agg(id) AS ids FROM ins`
  await t.sql`SELECT pgsched._enqueue_attempts(${backlog!.ids}::bigint[])`
  const [orphan] = await t.sql<{ id: number }[]>`
    INSERT INTO pgsched.runs (job_id, scheduled_for, available_at)
    VALUES (${job}, now() - interval '3 days', now() - interval '1 hour') RETURNING id`
  const actions = await t.sql<{ action: string; run_id: number }[]>`
    SELECT action, run_id FROM pgsched.rescue(interval '60 seconds', p_orphan_batch => 10)`
  expect(actions).toContainEqual({ action: 'run_requeued', run_id: orphan!.id })
  expect(actions.filter((a) => a.action === 'run_requeued')).toHaveLength(1)
})

it('measures a deep queue by estimate, exactly when shallow', async () => {
  const [small] = await t.sql<{ depth: number }[]>`SELECT pgsched._queue_depth()::int AS depth`
  const [exact] = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pgsched.runs WHERE status IN ('waiting', 'queued')`
  expect(small!.depth).toBe(exact!.n)
  const { job } = await submit('deep')
  await t.sql`
    INSERT INTO pgsched.runs (job_id, scheduled_for, available_at)
    SELECT ${job}, now() + make_interval(secs => i), now() + interval '1 day'
    FROM generate_series(1, 20000) i`
  await t.sql`ANALYZE pgsched.runs`
  const [d] = await t.sql<{ level: number; queue_depth: number }[]>`
    SELECT level, queue_depth::int FROM pgsched.evaluate_degradation()`
  const n = exact!.n + 1 + 20000
  expect(d!.queue_depth).toBeGreaterThan(n * 0.8)
  expect(d!.queue_depth).toBeLessThan(n * 1.2)
  expect(d!.level).toBe(0)
})

it('drops expired days whole, keeps dead and unfinished runs, and skips a day whose lock is held', async () => {
  const done = await submit('done')
  const dead = await submit('dead')
  const queued = await submit('queued')
  await t.sql`
    INSERT INTO pgsched.run_attempts (run_id, attempt, worker, outcome, finished_at)
    VALUES (${done.run}, 1, 'w', 'succeeded', now()), (${dead.run}, 1, 'w', 'failed', now())`
  await t.sql`UPDATE pgsched.runs SET status = 'succeeded', finished_at = now() WHERE id = ${done.run}`
  await t.sql`UPDATE pgsched.runs SET status = 'dead', finished_at = now() WHERE id = ${dead.run}`
  const statusOf = async (id: number) =>
    (await t.sql<{ status: string }[]>`SELECT status FROM pgsched.jobs WHERE id = ${id}`)[0]!.status
  const doneStatus = await statusOf(done.job)
  const later = new Date(Date.now() + 40 * DAY_MS)

  // A reader holds today's run_events partition: that day is skipped within the lock timeout.
  const reader = await t.sql.reserve()
  await reader`BEGIN`
  await reader.unsafe(`LOCK TABLE pgsched.run_events${suffix()} IN ACCESS SHARE MODE`)
  const started = Date.now()
  const first = await historyMaintain(t.sql, { now: later, lockTimeoutMs: 200 })
  expect(Date.now() - started).toBeLessThan(5_000)
  expect(first.skipped).toContain(`runs${suffix()}`)
  expect(first.dropped).not.toContain(`runs${suffix()}`)
  expect(first.dropped).toContain(`runs${suffix(1)}`)
  expect(await partitions('runs')).toContain(`runs${suffix()}`)
  await reader`ROLLBACK`
  reader.release()

  const second = await historyMaintain(t.sql, { now: later, lockTimeoutMs: 200 })
  expect(second.skipped).toEqual([])
  for (const table of TABLES) {
    expect(second.dropped).toContain(`${table}${suffix()}`)
    const names = await partitions(table)
    expect(names.filter((n) => /_d\d{8}$/.test(n) && n < `${table}${suffix(40)}`)).toEqual([])
    expect(names).toContain(`${table}${suffix(43)}`)
  }
  expect(second.kept).toBeGreaterThanOrEqual(2)

  const runs = await t.sql<{ id: number; status: string; partition: string }[]>`
    SELECT id, status, tableoid::regclass::text AS partition FROM pgsched.runs
    WHERE id IN ${t.sql([done.run, dead.run, queued.run])} ORDER BY id`
  expect(runs.map((r) => [r.id, r.status, r.partition])).toEqual([
    [dead.run, 'dead', 'pgsched.runs_default'],
    [queued.run, 'queued', 'pgsched.runs_default'],
  ])
  const attempts = await t.sql`SELECT run_id FROM pgsched.run_attempts WHERE run_id = ${dead.run}`
  expect(attempts).toHaveLength(1)
  const events = await t.sql<{ run_id: number; to_status: string }[]>`
    SELECT run_id, to_status FROM pgsched.run_events
    WHERE run_id IN ${t.sql([done.run, dead.run])} ORDER BY run_id, id`
  expect(events.map((e) => [e.run_id, e.to_status])).toEqual([
    [dead.run, 'queued'],
    [dead.run, 'dead'],
  ])

  // The jobs stay readable with their status, their runs or without.
  const token = await t.token('admin', 'admin')
  for (const [job, status] of [
    [done.job, doneStatus],
    [dead.job, await statusOf(dead.job)],
  ] as const) {
    const res = await t.request('GET', `/v1/jobs/${job}`, { token })
    expect(res.status).toBe(200)
    expect(res.body.status).toBe(status)
  }
  const doneRuns = await t.request('GET', `/v1/jobs/${done.job}/runs`, { token })
  expect(doneRuns.status).toBe(200)
  expect(doneRuns.body.items).toEqual([])
  const deadRuns = await t.request('GET', `/v1/jobs/${dead.job}/runs`, { token })
  expect(deadRuns.body.items.map((r: { run_id: number }) => r.run_id)).toEqual([dead.run])

  // A handled dead letter of an expired day leaves the DEFAULT partition on the next pass.
  await t.sql`UPDATE pgsched.runs SET status = 'cancelled' WHERE id = ${dead.run}`
  const third = await historyMaintain(t.sql, { now: later })
  expect(third.deleted).toBe(1)
  expect(await t.sql`SELECT 1 FROM pgsched.runs WHERE id = ${dead.run}`).toHaveLength(0)
  expect(await t.sql`SELECT 1 FROM pgsched.run_events WHERE run_id = ${dead.run}`).toHaveLength(0)
  expect(await t.sql`SELECT 1 FROM pgsched.runs WHERE id = ${queued.run}`).toHaveLength(1)
})
