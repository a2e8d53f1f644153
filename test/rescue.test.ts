/**
 * The leader's rescue sweep (pgsched.rescue) and the worker registry, in SQL: each rule, with the
 * clock moved by writing timestamps in the past.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { runStart } from '../src/db/queries/runs.ts'
import { rescue, workerHeartbeat } from '../src/db/queries/workers.ts'
import { setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle

beforeAll(async () => {
  t = await setup()
})
afterAll(() => t.close())

const TIMEOUT_S = 60
let workers = 0

async function register(runs: number[] = []) {
  const name = `w${++workers}`
  await workerHeartbeat(t.sql, {
    name,
    host: 'test',
    pid: workers,
    concurrency: 1,
    runs,
    executorIds: [`pool-${name}`],
    state: 'active',
  })
  return name
}

const silence = (name: string, seconds: number) =>
  t.sql`UPDATE pgsched.workers SET heartbeat_at = now() - make_interval(secs => ${seconds})
        WHERE name = ${name}`

async function queuedRun(opts = "max_retries => 1, backoff_base_seconds => 0, queue => 'lane'") {
  const [job] = await t.sql.unsafe(
    `SELECT pgsched.submit_job(name => 'r', command => 'true', ${opts}) AS id`,
  )
  const [run] = await t.sql<{ id: number; executor_job_id: number }[]>`
    SELECT r.id, (SELECT gk.id FROM graphile_worker._private_jobs gk WHERE gk.key = 'pgsched_run:' || r.id) AS executor_job_id
    FROM pgsched.runs r WHERE r.job_id = ${job!.id}`
  return run!
}

/** What Graphile Worker's pool `pool` does when it claims an executor job. */
const claim = (jobId: number, pool: string) => t.sql`
  WITH j AS (
    UPDATE graphile_worker._private_jobs SET locked_at = now(), locked_by = ${pool},
      attempts = attempts + 1
    WHERE id = ${jobId} RETURNING job_queue_id
  )
  UPDATE graphile_worker._private_job_queues SET locked_at = now(), locked_by = ${pool}
  WHERE id = (SELECT job_queue_id FROM j)`

const runRow = async (id: number) =>
  (
    await t.sql`
    SELECT r.status, r.attempt, (
      SELECT count(*)::int FROM graphile_worker.jobs g
      WHERE g.key = 'pgsched_run:' || r.id AND g.locked_at IS NULL AND g.attempts < g.max_attempts
    ) AS runnable FROM pgsched.runs r WHERE r.id = ${id}`
  )[0]!

it('leaves a worker alone until it has been silent for the whole timeout', async () => {
  const w = await register()
  const run = await queuedRun()
  await claim(run.executor_job_id, `pool-${w}`)
  await runStart(t.sql, run.id, 1, w)
  await silence(w, TIMEOUT_S - 30)
  expect(await rescue(t.sql, TIMEOUT_S)).toEqual([])
  expect(await runRow(run.id)).toMatchObject({ status: 'running', attempt: 1 })
})

it('declares a silent worker dead, retries its running attempt and releases its locks', async () => {
  const w = await register()
  const run = await queuedRun()
  await claim(run.executor_job_id, `pool-${w}`)
  await runStart(t.sql, run.id, 1, w)
  await silence(w, TIMEOUT_S + 1)

  const actions = await rescue(t.sql, TIMEOUT_S)
  expect(actions.map((a) => [a.action, a.worker, a.run_id])).toEqual([
    ['worker_dead', w, null],
    ['run_lost', w, run.id],
  ])
  expect(await runRow(run.id)).toMatchObject({ status: 'failed', attempt: 2, runnable: 1 })
  const [attempt] = await t.sql`
    SELECT outcome, error FROM pgsched.run_attempts WHERE run_id = ${run.id}`
  expect(attempt).toEqual({
    outcome: 'lost',
    error: `worker lost: ${w} stopped sending heartbeats`,
  })
  const locked = await t.sql`
    SELECT 1 FROM graphile_worker._private_job_queues WHERE locked_by = ${`pool-${w}`}
    UNION ALL SELECT 1 FROM graphile_worker.jobs WHERE locked_by = ${`pool-${w}`}`
  expect(locked).toEqual([])
  expect(await t.sql`SELECT state, error FROM pgsched.workers WHERE name = ${w}`).toEqual([
    { state: 'dead', error: `no heartbeat for ${TIMEOUT_S + 1} s` },
  ])
  expect(await rescue(t.sql, TIMEOUT_S)).toEqual([])
})

it('dead-letters a lost run whose retries are used up', async () => {
  const w = await register()
  const run = await queuedRun('max_retries => 0')
  await claim(run.executor_job_id, `pool-${w}`)
  await runStart(t.sql, run.id, 1, w)
  await silence(w, TIMEOUT_S + 1)
  await rescue(t.sql, TIMEOUT_S)
  expect(await runRow(run.id)).toMatchObject({ status: 'dead', attempt: 1, runnable: 0 })
})

it('enqueues again a run a dead worker had claimed but not started', async () => {
  const w = await register()
  const run = await queuedRun()
  await claim(run.executor_job_id, `pool-${w}`)
  await silence(w, TIMEOUT_S + 1)
  const actions = await rescue(t.sql, TIMEOUT_S)
  expect(actions.map((a) => [a.action, a.run_id])).toEqual([
    ['worker_dead', null],
    ['run_requeued', run.id],
  ])
  expect(await runRow(run.id)).toMatchObject({ status: 'queued', attempt: 1, runnable: 1 })
  // The dead worker, should it wake up, may not start it.
  expect(await runStart(t.sql, run.id, 1, w)).toBeUndefined()
})

it('retries a running attempt that a live worker no longer reports holding', async () => {
  const w = await register()
  const held = await queuedRun()
  const orphan = await queuedRun()
  for (const r of [held, orphan]) {
    await claim(r.executor_job_id, `pool-${w}`)
    await runStart(t.sql, r.id, 1, w)
  }
  await t.sql`UPDATE pgsched.runs SET updated_at = now() - interval '2 minutes'
              WHERE id IN ${t.sql([held.id, orphan.id])}`
  await workerHeartbeat(t.sql, {
    name: w,
    host: 'test',
    pid: 0,
    concurrency: 1,
    runs: [held.id],
    executorIds: [`pool-${w}`],
    state: 'active',
  })
  const actions = await rescue(t.sql, TIMEOUT_S)
  expect(actions.map((a) => [a.action, a.run_id, a.detail])).toEqual([
    ['run_lost', orphan.id, `worker lost: ${w} no longer holds this attempt → failed`],
  ])
  expect(await runRow(held.id)).toMatchObject({ status: 'running' })
})

it('enqueues again a waiting run whose executor job vanished, unless its job is paused', async () => {
  const lostJob = await queuedRun()
  const paused = await queuedRun()
  await t.sql`SELECT pgsched.pause_job(job_id) FROM pgsched.runs WHERE id = ${paused.id}`
  await t.sql`SELECT graphile_worker.complete_jobs(ARRAY[${lostJob.executor_job_id}]::bigint[])`
  await t.sql`UPDATE pgsched.runs SET available_at = now() - interval '2 minutes'
              WHERE id IN ${t.sql([lostJob.id, paused.id])}`
  const actions = await rescue(t.sql, TIMEOUT_S)
  expect(actions.map((a) => [a.action, a.run_id, a.detail])).toEqual([
    ['run_requeued', lostJob.id, 'its executor job was lost'],
  ])
  expect(await runRow(lostJob.id)).toMatchObject({ status: 'queued', runnable: 1 })
  expect(await runRow(paused.id)).toMatchObject({ status: 'queued', runnable: 0 })
})

it('tells a worker declared dead so on its next heartbeat, and takes it back', async () => {
  const w = await register()
  await silence(w, TIMEOUT_S + 1)
  await rescue(t.sql, TIMEOUT_S)
  const beat = {
    name: w,
    host: 'test',
    pid: 0,
    concurrency: 1,
    runs: [],
    executorIds: [],
    state: 'active' as const,
  }
  expect(await workerHeartbeat(t.sql, beat)).toBe('dead')
  expect(await workerHeartbeat(t.sql, beat)).toBe('active')
  const [row] = await t.sql`SELECT state, error FROM pgsched.workers WHERE name = ${w}`
  expect(row).toEqual({ state: 'active', error: null })
})

it('judges silence as of the time it is given, not only the clock', async () => {
  const w = await register()
  const [{ later } = { later: new Date(0) }] = await t.sql<{ later: Date }[]>`
    SELECT now() + make_interval(secs => ${TIMEOUT_S + 1}) AS later`
  // The worker has just beaten: alive now, dead as of a timeout and a second later.
  expect((await rescue(t.sql, TIMEOUT_S)).filter((a) => a.worker === w)).toEqual([])
  const actions = await rescue(t.sql, TIMEOUT_S, later)
  expect(actions.filter((a) => a.worker === w).map((a) => [a.action, a.detail])).toEqual([
    ['worker_dead', `no heartbeat for ${TIMEOUT_S + 1} s`],
  ])
  expect(await t.sql`SELECT state, stopped_at FROM pgsched.workers WHERE name = ${w}`).toEqual([
    { state: 'dead', stopped_at: later },
  ])
})

it('lists workers over REST with their heartbeat age, to any reader', async () => {
  const w = await register([1, 2])
  const viewer = await t.token('v', 'viewer')
  const res = await t.request('GET', '/v1/workers', { token: viewer })
  expect(res.status).toBe(200)
  const me = res.body.items.find((x: { name: string }) => x.name === w)
  expect(me).toMatchObject({ state: 'active', running: 2, concurrency: 1, host: 'test' })
  expect(me.heartbeat_age_seconds).toBeGreaterThanOrEqual(0)
  expect(me.heartbeat_age_seconds).toBeLessThan(5)
  expect((await t.request('GET', '/v1/workers')).status).toBe(401)
})

it('shows no leader before any election, then the leader, its term and since when', async () => {
  const viewer = await t.token('v', 'viewer')
  expect((await t.request('GET', '/v1/scheduler', { token: viewer })).body).toEqual({
    leader: null,
    term: null,
    since: null,
    leading: false,
  })
  const s = t.startScheduler()
  await waitFor(() => s.isLeader)
  const res = await t.request('GET', '/v1/scheduler', { token: viewer })
  expect(res.body).toMatchObject({
    leader: expect.stringMatching(/^test:/),
    term: 1,
    leading: true,
  })
  expect(Date.now() - Date.parse(res.body.since)).toBeLessThan(10_000)
})
