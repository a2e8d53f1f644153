/**
 * Graceful degradation against real Postgres: the admin API that sets it, what each level sheds
 * (1 priorities 8-10 not taken, 2 history capped, 3 dependency checks dropped, 4 submissions
 * refused), and the automatic mode that follows the queue depth and records why.
 */
import type postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { setup, signal, type TestBundle, waitFor } from './helpers.ts'

const PATH = '/v1/admin/degradation'
let t: TestBundle
let root: string
let alice: string
let app: postgres.Sql

beforeAll(async () => {
  t = await setup()
  ;[root, alice] = await Promise.all([t.token('root', 'admin'), t.token('alice', 'submitter')])
  // An application role that may only submit (see sql-privileges.test.ts).
  app = (await t.submitterSession()).sql
})
afterAll(() => t.close())
// Whatever a test did, the next one starts at level 0.
afterEach(() => put({ mode: 'manual', level: 0 }))

const put = (body: object, token = root) => t.request('PUT', PATH, { token, body })
/** The SQLSTATE a statement fails with ('ok' when it succeeds). */
const sqlstate = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: { code: string }) => e.code,
  )
/** A submission through the SQL API, on connection `sql`. */
const submitSql = (sql: postgres.Sql) =>
  sql`SELECT pgsched.submit_job(name => 'x', command => 'true')`
const post = (path: string, body: object) => t.request('POST', path, { token: alice, body })
/** A one-off job that stays queued for an hour. */
const later = (name: string, more: object = {}) => ({
  name,
  command: 'true',
  run_at: new Date(Date.now() + 3600_000).toISOString(),
  ...more,
})

/** Sets a manual level through the API (which also clears the API's cached level). */
async function setLevel(level: number, reason?: string) {
  const res = await put({ mode: 'manual', level, ...(reason ? { reason } : {}) })
  expect(res.status).toBe(200)
  return res.body
}

async function submit(body: Record<string, unknown>, token = alice): Promise<number> {
  const res = await t.request('POST', '/v1/jobs', { token, body })
  expect(res.status).toBe(201)
  return res.body.job_id
}

const statuses = async (jobId: number) =>
  (await t.sql`SELECT status FROM pgsched.runs WHERE job_id = ${jobId} ORDER BY id`).map(
    (r) => r.status,
  )
const jobCount = async () => (await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs`)[0]!.n

describe('the admin API', () => {
  it('is for admins only, and a manual mode without a level is refused naming the field', async () => {
    const before = (await t.request('GET', PATH, { token: root })).body
    expect((await t.request('GET', PATH, { token: alice })).status).toBe(403)
    expect((await put({ mode: 'manual', level: 4 }, alice)).status).toBe(403)
    expect((await t.request('GET', PATH)).status).toBe(401)
    expect((await t.request('PUT', PATH, { body: { mode: 'manual', level: 4 } })).status).toBe(401)
    const bad = await put({ mode: 'manual' })
    expect(bad.status).toBe(400)
    expect(bad.body.errors).toEqual([{ field: 'level', message: expect.any(String) }])
    expect((await t.request('GET', PATH, { token: root })).body).toEqual(before)
  })

  it('returns the new state and records the change with its cause and actor', async () => {
    const res = await put({ mode: 'manual', level: 2, reason: 'incident 42: disk pressure' })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      mode: 'manual',
      level: 2,
      cause: 'incident 42: disk pressure',
    })
    expect(res.body.events[0]).toMatchObject({
      from_level: 0,
      to_level: 2,
      mode: 'manual',
      cause: 'incident 42: disk pressure',
      actor: 'root',
    })
    expect((await t.request('GET', PATH, { token: root })).body).toMatchObject({ level: 2 })
  })

  it('refuses pgsched.set_degradation to a pgsched_submitter session', async () => {
    expect(await sqlstate(app`SELECT pgsched.set_degradation('manual', 4)`)).toBe('42501')
    const [d] = await t.sql`SELECT level FROM pgsched.degradation`
    expect(d!.level).toBe(0)
  })
})

it('level 1: workers leave priorities 8-10 queued until the level drops', async () => {
  const ran: string[] = []
  // How many runs each fetch of the executor claimed.
  const claimed: number[] = []
  const polls = signal()
  const worker = await t.startWorker({
    heartbeatIntervalMs: 200,
    concurrency: 2,
    tasks: { mark: (p) => ran.push((p as { n: string }).n) },
    onPoll: (n) => {
      claimed.push(n)
      polls.fire()
    },
  })
  await setLevel(1)
  // The worker reads the level at each heartbeat: two more beats and it has surely seen it.
  const beat = async () =>
    (await t.sql`SELECT heartbeat_at FROM pgsched.workers WHERE name = ${worker.name}`)[0]!
      .heartbeat_at as Date
  for (let i = 0; i < 2; i++) {
    const last = (await beat()).getTime()
    await waitFor(async () => (await beat()).getTime() > last, 5000, 'a worker heartbeat')
  }
  const low = await submit({ name: 'low', task: 'mark', payload: { n: 'p9' }, priority: 9 })
  const normal = await submit({ name: 'normal', task: 'mark', payload: { n: 'p5' }, priority: 5 })
  await waitFor(async () => (await statuses(normal))[0] === 'succeeded', 10_000, 'the p5 run')
  // Two more fetches, each with the p9 run due and the worker free: neither claims it.
  const since = claimed.length
  await polls.next(2, 5000, 'two executor fetches')
  expect(claimed.slice(since).filter((n) => n > 0)).toEqual([])
  expect(ran).toEqual(['p5'])
  expect(await statuses(low)).toEqual(['queued'])

  await setLevel(0)
  await waitFor(async () => (await statuses(low))[0] === 'succeeded', 10_000, 'the p9 run')
  expect(ran).toEqual(['p5', 'p9'])
  await worker.stop()
})

it('level 2: history pages hold at most 20 items from the last 24 h, and say so', async () => {
  const bob = await t.token('bob', 'submitter')
  const get = (path: string) => t.request('GET', path, { token: bob })
  const job = await submit(later('history'), bob)
  await t.sql`INSERT INTO pgsched.runs (job_id, scheduled_for, status, finished_at)
    SELECT ${job}, now() - make_interval(mins => g), 'succeeded', now()
    FROM generate_series(1, 29) g`
  // The five newest runs (which a plain page of 20 would show) were created two days ago.
  const old = (
    await t.sql`UPDATE pgsched.runs SET created_at = now() - interval '2 days'
      WHERE id IN (SELECT id FROM pgsched.runs WHERE job_id = ${job} ORDER BY id DESC LIMIT 5)
      RETURNING id`
  ).map((r) => r.id)

  const full = await get(`/v1/jobs/${job}/runs?limit=100`)
  expect(full.body.items).toHaveLength(30)
  expect(full.headers.get('pgsched-degradation')).toBeNull()

  await setLevel(2)
  const capped = await get(`/v1/jobs/${job}/runs?limit=100`)
  expect(capped.headers.get('pgsched-degradation')).toMatch(/^level=2/)
  expect(capped.body.items).toHaveLength(20)
  const dayAgo = Date.now() - 24 * 3600_000
  for (const r of capped.body.items) {
    expect(Date.parse(r.created_at)).toBeGreaterThan(dayAgo)
    expect(old).not.toContain(r.run_id)
  }

  // Dead letters and the job list are capped the same way.
  const dead = await t.sql`INSERT INTO pgsched.runs (job_id, scheduled_for, status, finished_at)
    SELECT ${job}, now() + make_interval(days => g), 'dead', now() FROM generate_series(1, 3) g
    RETURNING id`
  await t.sql`UPDATE pgsched.runs SET created_at = now() - interval '2 days' WHERE id = ${dead[0]!.id}`
  const oldJob = await submit(later('old'), bob)
  await t.sql`UPDATE pgsched.jobs SET created_at = now() - interval '2 days' WHERE id = ${oldJob}`
  const letters = await get('/v1/dead-letters?limit=100')
  expect(letters.headers.get('pgsched-degradation')).toMatch(/^level=2/)
  expect(letters.body.items.map((r: { run_id: number }) => r.run_id)).toEqual(
    [dead[2], dead[1]].map((r) => r!.id),
  )
  const jobs = await get('/v1/jobs?limit=100')
  expect(jobs.headers.get('pgsched-degradation')).toMatch(/^level=2/)
  expect(jobs.body.items.map((j: { job_id: number }) => j.job_id)).toEqual([job])
})

it('level 3: waiting runs are queued at once, and new dependents are queued directly', async () => {
  const a = await submit(later('a'))
  const b = await submit(later('b', { depends_on: [a] }))
  expect(await statuses(b)).toEqual(['waiting'])

  await setLevel(3)
  expect(await statuses(b)).toEqual(['queued'])
  expect(await statuses(a)).toEqual(['queued'])
  const [executor] = await t.sql`
    SELECT count(*)::int AS n FROM graphile_worker.jobs g JOIN pgsched.runs r
      ON g.key = 'pgsched_run:' || r.id WHERE r.job_id = ${b}`
  expect(executor!.n).toBe(1)
  const c = await submit(later('c', { depends_on: [a] }))
  expect(await statuses(c)).toEqual(['queued'])

  await setLevel(0)
  const d = await submit(later('d', { depends_on: [a] }))
  expect(await statuses(d)).toEqual(['waiting'])
})

it('level 3: a waiting run of a job paused when the level was set starts once resumed', async () => {
  const a = await submit(later('a'))
  const b = await submit(later('b', { depends_on: [a] }))
  const patch = (status: string) =>
    t.request('PATCH', `/v1/jobs/${b}`, { token: alice, body: { status } })
  expect((await patch('paused')).status).toBe(200)
  await setLevel(3)
  expect((await patch('active')).status).toBe(200)
  // Whatever the leader's sweep does next, the run should not wait for its dependency any more.
  await t.sql`SELECT pgsched.resolve_waiting()`
  expect(await statuses(b)).toEqual(['queued'])
})

it('level 4: every way to submit is refused and nothing is stored', async () => {
  const before = await jobCount()
  await setLevel(4, 'disk full')
  const one = await post('/v1/jobs', { name: 'x', command: 'true' })
  expect(one.status).toBe(503)
  expect(one.headers.get('content-type')).toContain('application/problem+json')
  expect(one.body).toMatchObject({ type: 'urn:pgsched:problem:unavailable', status: 503 })
  expect(Number(one.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
  const batch = await post('/v1/jobs/batch', { jobs: [{ name: 'x', command: 'true' }] })
  expect(batch.status).toBe(503)
  expect(Number(batch.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
  const refusal = await submitSql(t.sql).catch((e: Error) => e)
  expect(refusal).toMatchObject({ code: 'PS503', message: expect.stringContaining('disk full') })
  expect(await sqlstate(submitSql(app))).toBe('PS503')
  const jobs = t.sql.json([{ name: 'x', command: 'true' }])
  expect(await sqlstate(t.sql`SELECT * FROM pgsched.submit_jobs(${jobs})`)).toBe('PS503')
  expect(await jobCount()).toBe(before)

  await setLevel(0)
  await submit(later('after'))
  expect(await jobCount()).toBe(before + 1)
})

it('automatic mode: the level follows the queue depth, with hysteresis, and says why', async () => {
  await t.sql`SELECT pgsched.cancel_job(id) FROM pgsched.jobs WHERE status IN ('active', 'paused')`
  const auto = await put({ mode: 'auto', warn_queue_depth: 3, critical_queue_depth: 6 })
  expect(auto.status).toBe(200)
  expect(auto.body).toMatchObject({ mode: 'auto', level: 0, queue_depth: 0 })
  const ids: number[] = []
  const add = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const [row] = await t.sql`SELECT pgsched.submit_job(name => 'deep', command => 'true',
        run_at => now() + interval '1 hour') AS id`
      ids.push(row!.id)
    }
  }
  const cancel = async (n: number) => {
    for (const id of ids.splice(0, n)) await t.sql`SELECT pgsched.cancel_job(${id})`
  }
  const evaluate = async () =>
    (await t.sql`SELECT level, queue_depth FROM pgsched.evaluate_degradation()`)[0]

  await add(4)
  expect(await evaluate()).toEqual({ level: 2, queue_depth: 4 })
  await add(3)
  expect(await evaluate()).toEqual({ level: 3, queue_depth: 7 })
  await add(5)
  expect(await evaluate()).toEqual({ level: 4, queue_depth: 12 })
  expect(await sqlstate(submitSql(t.sql))).toBe('PS503')
  // The API sees the new level once its cached one expires (at most a second).
  await waitFor(async () =>
    (await t.request('GET', '/v1/jobs?limit=1', { token: alice })).headers
      .get('pgsched-degradation')
      ?.startsWith('level=4'),
  )
  expect((await post('/v1/jobs', { name: 'x', command: 'true' })).status).toBe(503)

  await cancel(1) // 11: within 10 % of twice the critical depth, so it stays at 4
  expect(await evaluate()).toEqual({ level: 4, queue_depth: 11 })
  await cancel(1)
  expect(await evaluate()).toEqual({ level: 3, queue_depth: 10 })
  await cancel(ids.length)
  expect(await evaluate()).toEqual({ level: 0, queue_depth: 0 })

  type Change = { from_level: number; to_level: number; actor: string; cause: string }
  const { events } = (await t.request('GET', PATH, { token: root })).body as { events: Change[] }
  const changes = events.filter((e) => e.actor === 'auto')
  expect(changes.map((e) => `${e.from_level}->${e.to_level}`)).toEqual([
    '3->0',
    '4->3',
    '3->4',
    '2->3',
    '0->2',
  ])
  for (const e of changes) expect(e.cause).toContain('queue depth')
  expect(changes[4]!.cause).toContain('queue depth 4 (warning at 3, critical at 6)')
})
