/**
 * Dependencies and batch submission, over REST and SQL: waiting runs, promotion in the
 * transaction that records the dependency's success, skips that cascade, the recurring rule,
 * the leader's sweep and its circuit-breaker fallback, and DAGs submitted in one batch.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { silentLogger } from '../src/core/types.ts'
import { runFinish, runStart } from '../src/db/queries/runs.ts'
import { createResolver } from '../src/scheduler/resolver.ts'
import { setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
let alice: string

beforeAll(async () => {
  t = await setup()
  alice = await t.token('alice', 'submitter')
})
afterAll(() => t.close())

async function submit(body: Record<string, unknown>) {
  const res = await t.request('POST', '/v1/jobs', { token: alice, body })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
  return res.body as { job_id: number; depends_on: number[] }
}

/** The one run of a one-off job (or the latest of a recurring one). */
async function runOf(jobId: number) {
  const [run] = await t.sql<
    { id: number; status: string; error: string | null; attempt: number }[]
  >`
    SELECT id, status, error, attempt FROM pgsched.runs WHERE job_id = ${jobId} ORDER BY id DESC LIMIT 1`
  return run!
}

/** Plays a worker by hand: starts the current attempt and records `outcome`. */
async function finish(jobId: number, outcome: 'succeeded' | 'failed' = 'succeeded') {
  const run = await runOf(jobId)
  expect(await runStart(t.sql, run.id, run.attempt, 'hand')).toBeDefined()
  return runFinish(t.sql, run.id, run.attempt, 'hand', {
    outcome,
    exitCode: outcome === 'succeeded' ? 0 : 1,
    output: null,
    error: outcome === 'succeeded' ? null : 'exited with code 1',
  })
}

const later = () => new Date(Date.now() + 3600_000).toISOString()
const jobCount = async () => (await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs`)[0]!.n

describe('dependencies', () => {
  it('keeps a run waiting until its dependency succeeds, and queues it in that same transaction', async () => {
    const a = await submit({ name: 'a', command: 'true' })
    const b = await submit({ name: 'b', command: 'true', depends_on: [a.job_id] })
    expect(b.depends_on).toEqual([a.job_id])
    expect(await runOf(b.job_id)).toMatchObject({ status: 'waiting' })
    expect(await finish(a.job_id)).toBe('succeeded')
    // No scheduler and no sleep: the commit that recorded a's success queued b.
    expect(await runOf(b.job_id)).toMatchObject({ status: 'queued' })
    const [executor] = await t.sql`
      SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = ${`pgsched_run:${(await runOf(b.job_id)).id}`}`
    expect(executor!.n).toBe(1)
  })

  it('waits for every dependency', async () => {
    const a = await submit({ name: 'a2', command: 'true' })
    const b = await submit({ name: 'b2', command: 'true' })
    const c = await submit({ name: 'c2', command: 'true', depends_on: [a.job_id, b.job_id] })
    await finish(a.job_id)
    expect(await runOf(c.job_id)).toMatchObject({ status: 'waiting' })
    await finish(b.job_id)
    expect(await runOf(c.job_id)).toMatchObject({ status: 'queued' })
  })

  it('skips the waiting dependents of a dead-lettered dependency, transitively, with the reason', async () => {
    const a = await submit({ name: 'fails', command: 'false', max_retries: 0 })
    const b = await submit({ name: 'after-fails', command: 'true', depends_on: [a.job_id] })
    const c = await submit({ name: 'after-after', command: 'true', depends_on: [b.job_id] })
    expect(await finish(a.job_id, 'failed')).toBe('dead')
    expect(await runOf(b.job_id)).toMatchObject({
      status: 'skipped',
      error: `dependency ${a.job_id} (fails) was dead-lettered`,
    })
    expect(await runOf(c.job_id)).toMatchObject({
      status: 'skipped',
      error: `dependency ${b.job_id} (after-fails) was skipped`,
    })
    const [job] = await t.sql`SELECT status FROM pgsched.jobs WHERE id = ${b.job_id}`
    expect(job!.status).toBe('completed')
  })

  it('skips the dependents of a cancelled dependency', async () => {
    const a = await submit({ name: 'to-cancel', command: 'true', run_at: later() })
    const b = await submit({ name: 'after-cancel', command: 'true', depends_on: [a.job_id] })
    expect((await t.request('DELETE', `/v1/jobs/${a.job_id}`, { token: alice })).status).toBe(200)
    expect(await runOf(b.job_id)).toMatchObject({
      status: 'skipped',
      error: `dependency ${a.job_id} (to-cancel) was cancelled`,
    })
  })

  it('refuses unknown and foreign dependencies with a 400 naming depends_on, writing nothing', async () => {
    const bob = await t.token('bob', 'submitter')
    const bobs = await t.request('POST', '/v1/jobs', {
      token: bob,
      body: { name: 'bobs', command: 'true' },
    })
    const before = await jobCount()
    for (const id of [987654, bobs.body.job_id]) {
      const res = await t.request('POST', '/v1/jobs', {
        token: alice,
        body: { name: 'x', command: 'true', depends_on: [id] },
      })
      expect(res.status).toBe(400)
      expect(res.body.errors).toEqual([
        { field: 'depends_on', message: `job ${id} does not exist` },
      ])
    }
    expect(await jobCount()).toBe(before)
  })

  it('applies the recurring rule: a success since the dependent’s previous run was created', async () => {
    // Schedules that never fire on their own here; runs come from trigger_job.
    const never = '0 0 1 1 *'
    const [dRow] = await t.sql<{ d: number }[]>`
      SELECT pgsched.submit_job(name => 'd', command => 'true', schedule => ${never}, owner => 'alice') AS d`
    const [jRow] = await t.sql<{ j: number }[]>`
      SELECT pgsched.submit_job(name => 'j', command => 'true', schedule => ${never}, owner => 'alice',
        depends_on => ${[dRow!.d]}::bigint[]) AS j`
    const d = dRow!.d
    const j = jRow!.j
    const trigger = (id: number) => t.sql`SELECT pgsched.trigger_job(${id})`

    await trigger(d)
    await finish(d)
    // The first run of j takes any success of d.
    await trigger(j)
    expect(await runOf(j)).toMatchObject({ status: 'queued' })
    await finish(j)
    // The next needs a success of d after j's previous run was created: the old one is too early.
    await trigger(j)
    expect(await runOf(j)).toMatchObject({ status: 'waiting' })
    await trigger(d)
    expect(await runOf(j)).toMatchObject({ status: 'waiting' })
    await finish(d)
    expect(await runOf(j)).toMatchObject({ status: 'queued' })
  })

  it('is caught up by the leader sweep when the transaction did not promote', async () => {
    const a = await submit({ name: 'sweep-a', command: 'true' })
    const b = await submit({ name: 'sweep-b', command: 'true', depends_on: [a.job_id] })
    await t.sql`ALTER TABLE pgsched.runs DISABLE TRIGGER runs_settled`
    try {
      await finish(a.job_id)
    } finally {
      await t.sql`ALTER TABLE pgsched.runs ENABLE TRIGGER runs_settled`
    }
    expect(await runOf(b.job_id)).toMatchObject({ status: 'waiting' })
    const scheduler = t.startScheduler({ resolveIntervalMs: 100 })
    try {
      await waitFor(async () => (await runOf(b.job_id)).status === 'queued', 5000, 'the sweep')
    } finally {
      // Left running, its resolver would meet the next test's injected failure, open its breaker
      // and promote waiting runs without checks in the tests after it.
      await scheduler.stop()
    }
  })

  it('falls back to promoting without checks when the checks keep failing, and counts it', async () => {
    const a = await submit({ name: 'broken-a', command: 'true', run_at: later() })
    const b = await submit({ name: 'broken-b', command: 'true', depends_on: [a.job_id] })
    // Fault injection: the resolver's check fails every time.
    await t.sql`ALTER FUNCTION pgsched.resolve_waiting(integer) RENAME TO resolve_waiting_saved`
    await t.sql`CREATE FUNCTION pgsched.resolve_waiting(p_limit integer) RETURNS integer
                LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$`
    const resolver = createResolver({
      sql: t.sql,
      logger: silentLogger,
      intervalMs: 50,
      failures: 3,
    })
    try {
      await resolver.start()
      await waitFor(async () => (await runOf(b.job_id)).status === 'queued', 5000, 'the fallback')
    } finally {
      await resolver.stop()
      await t.sql`DROP FUNCTION pgsched.resolve_waiting(integer)`
      await t.sql`ALTER FUNCTION pgsched.resolve_waiting_saved(integer) RENAME TO resolve_waiting`
    }
    const [d] = await t.sql`SELECT resolver_fallbacks FROM pgsched.degradation`
    expect(Number(d!.resolver_fallbacks)).toBeGreaterThanOrEqual(1)
  })
})

describe('batch submission', () => {
  const batch = (jobs: unknown[], token = alice) =>
    t.request('POST', '/v1/jobs/batch', { token, body: { jobs } })

  it('submits a DAG in one request: refs resolve to ids and only the roots are queued', async () => {
    const res = await batch([
      { ref: 'd', name: 'join', command: 'true', depends_on: ['b', 'c'] },
      { ref: 'a', name: 'root', command: 'true' },
      { ref: 'b', name: 'left', command: 'true', depends_on: ['a'] },
      { ref: 'c', name: 'right', command: 'true', depends_on: ['a'] },
    ])
    expect(res.status).toBe(201)
    const jobs = res.body.jobs as {
      ref: string
      job_id: number
      depends_on: number[]
      created: boolean
    }[]
    expect(jobs.map((j) => j.ref)).toEqual(['d', 'a', 'b', 'c'])
    const id = Object.fromEntries(jobs.map((j) => [j.ref, j.job_id]))
    expect(jobs[0]!.depends_on).toEqual([id.b, id.c].sort((x, y) => x! - y!))
    expect(jobs.every((j) => j.created)).toBe(true)
    expect((await runOf(id.a!)).status).toBe('queued')
    for (const r of ['b', 'c', 'd']) expect((await runOf(id[r]!)).status).toBe('waiting')
    await finish(id.a!)
    await finish(id.b!)
    expect((await runOf(id.d!)).status).toBe('waiting')
    await finish(id.c!)
    expect((await runOf(id.d!)).status).toBe('queued')
  })

  it('refuses the whole batch on a cycle, an unknown ref, or one bad job, naming the element', async () => {
    const before = await jobCount()
    const cycle = await batch([
      { ref: 'x', name: 'x', command: 'true', depends_on: ['y'] },
      { ref: 'y', name: 'y', command: 'true', depends_on: ['x'] },
    ])
    expect(cycle.status).toBe(400)
    expect(cycle.body.errors[0].field).toBe('jobs[0].depends_on')
    expect(cycle.body.errors[0].message).toMatch(/dependency cycle among refs 'x', 'y'/)

    const unknown = await batch([
      { ref: 'x', name: 'x', command: 'true' },
      { name: 'y', command: 'true', depends_on: ['nope'] },
    ])
    expect(unknown.status).toBe(400)
    expect(unknown.body.errors).toEqual([
      { field: 'jobs[1].depends_on', message: "no job in this batch has ref 'nope'" },
    ])

    const bad = await batch([
      { name: 'ok', command: 'true' },
      { name: 'bad', command: 'true', priority: 11 },
    ])
    expect(bad.status).toBe(400)
    expect(bad.body.errors[0].field).toBe('jobs[1].priority')

    const tooMany = await batch(
      Array.from({ length: 1001 }, (_, i) => ({ name: `j${i}`, command: 'true' })),
    )
    expect(tooMany.status).toBe(400)
    expect(await jobCount()).toBe(before)
  })

  it('plans the first tick of a scheduled job in the batch, so the answer shows next_run', async () => {
    const res = await batch([
      { name: 'every-minute', command: 'true', schedule: '* * * * *' },
      { name: 'once', command: 'true', run_at: later() },
    ])
    expect(res.status).toBe(201)
    const [cron, once] = res.body.jobs as { next_run: string | null }[]
    expect(Date.parse(cron!.next_run!)).toBeGreaterThan(Date.now())
    expect(Date.parse(cron!.next_run!)).toBeLessThanOrEqual(Date.now() + 61_000)
    expect(Date.parse(once!.next_run!)).toBeGreaterThan(Date.now() + 3_500_000)
  })

  it('accepts 1,000 jobs in one batch', async () => {
    const before = await jobCount()
    // A user of its own: the batch takes 1,000 tokens, the whole default minute.
    const carol = await t.token('carol', 'submitter')
    const res = await batch(
      Array.from({ length: 1000 }, (_, i) => ({
        ref: `n${i}`,
        name: `chain-${i}`,
        task: 'noop',
        run_at: later(),
        ...(i > 0 ? { depends_on: [`n${i - 1}`] } : {}),
      })),
      carol,
    )
    expect(res.status).toBe(201)
    expect(await jobCount()).toBe(before + 1000)
  })

  it('is the same over SQL: pgsched.submit_jobs in the caller’s transaction, errors naming the element', async () => {
    const [a] =
      await t.sql`SELECT pgsched.submit_job(name => 'sql-root', command => 'true', owner => 'alice') AS id`
    const rows = await t.sql<{ ref: string | null; job_id: number }[]>`
      SELECT * FROM pgsched.submit_jobs(${t.sql.json([
        { ref: 'child', name: 'sql-child', command: 'true', depends_on: [a!.id] },
        { name: 'sql-grandchild', command: 'true', depends_on: ['child'] },
      ])}::jsonb, owner => 'alice')`
    expect(rows.map((r) => r.ref)).toEqual(['child', null])
    expect((await runOf(rows[1]!.job_id)).status).toBe('waiting')

    const before = await jobCount()
    const err = await t.sql`
      SELECT * FROM pgsched.submit_jobs(${t.sql.json([
        { name: 'fine', command: 'true' },
        { name: 'broken', command: 'true', timeout_seconds: 0 },
      ])}::jsonb, owner => 'alice')`.catch((e) => e)
    expect(err).toMatchObject({ code: '22023', column_name: 'jobs[1].timeout_seconds' })
    await t.sql
      .begin(async (tx) => {
        await tx`SELECT * FROM pgsched.submit_jobs('[{"name":"rolled-back","command":"true"}]'::jsonb)`
        throw new Error('roll back')
      })
      .catch(() => {})
    expect(await jobCount()).toBe(before)
  })
})
