import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle
let alice: string

beforeAll(async () => {
  t = await setup()
  alice = await t.token('alice', 'submitter')
})
afterAll(() => t.close())

const count = async (table: string) => {
  const [row] = await t.sql`SELECT count(*)::int AS n FROM ${t.sql(`pgsched.${table}`)}`
  return row!.n as number
}

describe('POST /v1/jobs', () => {
  it('creates a one-off job with its queued run and executor job', async () => {
    const res = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'once', command: 'echo hi' },
    })
    expect(res.status).toBe(201)
    expect(res.body).toMatchObject({
      name: 'once',
      kind: 'command',
      status: 'active',
      owner: 'alice',
      priority: 5,
    })
    expect(Date.parse(res.body.next_run)).not.toBeNaN()
    const runs =
      await t.sql`SELECT r.status, (SELECT gk.id FROM graphile_worker._private_jobs gk WHERE gk.key = 'pgsched_run:' || r.id) AS executor_job_id
        FROM pgsched.runs r WHERE r.job_id = ${res.body.job_id}`
    expect(runs).toHaveLength(1)
    expect(runs[0]!.status).toBe('queued')
    const [gw] =
      await t.sql`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE id = ${runs[0]!.executor_job_id}`
    expect(gw!.n).toBe(1)
  })

  it('delays a job given run_at, and reports it as next_run', async () => {
    const runAt = new Date(Date.now() + 3_600_000).toISOString()
    const res = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'later', command: 'true', run_at: runAt },
    })
    expect(res.status).toBe(201)
    expect(res.body.next_run).toBe(runAt)
    const [gw] = await t.sql`
      SELECT g.run_at FROM pgsched.runs r JOIN graphile_worker.jobs g ON g.key = 'pgsched_run:' || r.id
      WHERE r.job_id = ${res.body.job_id}`
    expect(gw!.run_at.toISOString()).toBe(runAt)
  })

  it('plans a cron job: next_run is its first tick in its time zone, and no run exists yet', async () => {
    const res = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'daily', command: 'true', schedule: '0 9 * * *', timezone: 'America/New_York' },
    })
    expect(res.status).toBe(201)
    const next = new Date(res.body.next_run)
    expect(next.getTime()).toBeGreaterThan(Date.now())
    const local = new Intl.DateTimeFormat('en-US', {
      timeZone: 'America/New_York',
      hour: 'numeric',
      hour12: false,
      minute: 'numeric',
    })
    expect(local.format(next)).toBe('09:00')
    expect(res.body.timezone).toBe('America/New_York')
    const [runs] =
      await t.sql`SELECT count(*)::int AS n FROM pgsched.runs WHERE job_id = ${res.body.job_id}`
    expect(runs!.n).toBe(0)
  })

  it('returns the first job for a repeated Idempotency-Key from the same user, 200', async () => {
    const body = { name: 'idem', command: 'true' }
    const headers = { 'idempotency-key': 'key-1' }
    const first = await t.request('POST', '/v1/jobs', { token: alice, body, headers })
    const again = await t.request('POST', '/v1/jobs', { token: alice, body, headers })
    expect(first.status).toBe(201)
    expect(again.status).toBe(200)
    expect(again.body.job_id).toBe(first.body.job_id)
    const [runs] =
      await t.sql`SELECT count(*)::int AS n FROM pgsched.runs WHERE job_id = ${first.body.job_id}`
    expect(runs!.n).toBe(1)
    const bob = await t.token('bob', 'submitter')
    const bobs = await t.request('POST', '/v1/jobs', { token: bob, body, headers })
    expect(bobs.status).toBe(201)
    expect(bobs.body.job_id).not.toBe(first.body.job_id)
  })

  it('creates one job when the same Idempotency-Key arrives concurrently', async () => {
    const headers = { 'idempotency-key': 'race-1' }
    const answers = await Promise.all(
      Array.from({ length: 8 }, () =>
        t.request('POST', '/v1/jobs', {
          token: alice,
          body: { name: 'race', command: 'true' },
          headers,
        }),
      ),
    )
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201])
    expect(new Set(answers.map((a) => a.body.job_id)).size).toBe(1)
    const [jobs] =
      await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs WHERE idempotency_key = 'race-1'`
    expect(jobs!.n).toBe(1)
  })

  it.each([
    [{ command: 'true' }, 'name'],
    [{ name: 'x' }, 'command'],
    [{ name: 'x', command: 'true', task: 't' }, 'command'],
    [{ name: 'x', command: 'true', priority: 11 }, 'priority'],
    [{ name: 'x', command: 'true', priority: 0 }, 'priority'],
    [{ name: 'x', command: 'true', max_retries: -1 }, 'max_retries'],
    [{ name: 'x', command: 'true', timeout_seconds: 0 }, 'timeout_seconds'],
    [{ name: 'x', command: 'true', run_at: 'tomorrow' }, 'run_at'],
    [{ name: 'x', command: 'true', schedule: '* * * *' }, 'schedule'],
    [{ name: 'x', command: 'true', schedule: '61 * * * *' }, 'schedule'],
    [{ name: 'x', command: 'true', schedule: '* * * * * * *' }, 'schedule'],
    [{ name: 'x', command: 'true', schedule: '* * * * *', timezone: 'Mars/Olympus' }, 'timezone'],
    [
      { name: 'x', command: 'true', schedule: '* * * * *', run_at: '2030-01-01T00:00:00Z' },
      'run_at',
    ],
    [{ name: 'x', command: 'true', payload: { a: 1 } }, 'payload'],
    [{ name: 'x', command: 'true', queue: 'has space' }, 'queue'],
    [{ name: 'x', command: 'true', colour: 'red' }, 'colour'],
  ])('refuses %j with 400 problem+json naming %s, and writes nothing', async (body, field) => {
    const before = [await count('jobs'), await count('runs')]
    const res = await t.request('POST', '/v1/jobs', { token: alice, body })
    expect(res.status).toBe(400)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
    expect(res.body).toMatchObject({ type: 'urn:pgsched:problem:validation', status: 400 })
    expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field)
    expect([await count('jobs'), await count('runs')]).toEqual(before)
  })

  it('refuses a body over 1 MiB with 413 problem+json, and writes nothing', async () => {
    const before = await count('jobs')
    const res = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'big', task: 't', payload: { blob: 'x'.repeat(1_100_000) } },
    })
    expect(res.status).toBe(413)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
    expect(await count('jobs')).toBe(before)
  })

  it('refuses a body that is not JSON with 400 problem+json', async () => {
    const res = await t.request('POST', '/v1/jobs', { token: alice, body: '{"name":' })
    expect(res.status).toBe(400)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
  })
})

describe('GET /v1/jobs', () => {
  it('pages with a cursor, newest first, and filters by name and status', async () => {
    for (const i of [1, 2, 3]) {
      await t.request('POST', '/v1/jobs', {
        token: alice,
        body: { name: 'paged', command: `echo ${i}` },
      })
    }
    const first = await t.request('GET', '/v1/jobs?name=paged&limit=2', { token: alice })
    expect(first.status).toBe(200)
    expect(first.body.items.map((j: { command: string }) => j.command)).toEqual([
      'echo 3',
      'echo 2',
    ])
    const second = await t.request(
      'GET',
      `/v1/jobs?name=paged&limit=2&cursor=${first.body.next_cursor}`,
      { token: alice },
    )
    expect(second.body.items.map((j: { command: string }) => j.command)).toEqual(['echo 1'])
    expect(second.body.next_cursor).toBeNull()
    const paused = await t.request('GET', '/v1/jobs?status=paused', { token: alice })
    expect(paused.body.items).toEqual([])
    const bad = await t.request('GET', '/v1/jobs?status=sleepy', { token: alice })
    expect(bad.status).toBe(400)
    expect(bad.body.errors[0].field).toBe('status')
  })
})

describe('PATCH /v1/jobs/{id}', () => {
  it('pauses and resumes a cron job, and replans its schedule', async () => {
    const { body: job } = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'patchme', command: 'true', schedule: '0 0 1 1 *' },
    })
    const paused = await t.request('PATCH', `/v1/jobs/${job.job_id}`, {
      token: alice,
      body: { status: 'paused' },
    })
    expect(paused.status).toBe(200)
    expect(paused.body.status).toBe('paused')
    const resumed = await t.request('PATCH', `/v1/jobs/${job.job_id}`, {
      token: alice,
      body: { status: 'active', priority: 2, schedule: '30 12 * * *' },
    })
    expect(resumed.status).toBe(200)
    expect(resumed.body).toMatchObject({ status: 'active', priority: 2, schedule: '30 12 * * *' })
    expect(new Date(resumed.body.next_run).getUTCHours()).toBe(12)
    expect(new Date(resumed.body.next_run).getUTCMinutes()).toBe(30)
    const bad = await t.request('PATCH', `/v1/jobs/${job.job_id}`, {
      token: alice,
      body: { schedule: 'nope' },
    })
    expect(bad.status).toBe(400)
    expect(bad.body.errors[0].field).toBe('schedule')
    const after = await t.request('GET', `/v1/jobs/${job.job_id}`, { token: alice })
    expect(after.body.schedule).toBe('30 12 * * *')
  })

  it('holds the queued run of a paused one-off job, and enqueues it again on resume', async () => {
    const { body: job } = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'held', command: 'true', run_at: new Date(Date.now() + 60_000).toISOString() },
    })
    await t.request('PATCH', `/v1/jobs/${job.job_id}`, {
      token: alice,
      body: { status: 'paused', priority: 9 },
    })
    const gwCount = async () => {
      const [row] = await t.sql`
        SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = ${`pgsched_run:${(await t.sql`SELECT id FROM pgsched.runs WHERE job_id = ${job.job_id}`)[0]!.id}`}`
      return row!.n
    }
    expect(await gwCount()).toBe(0)
    await t.request('PATCH', `/v1/jobs/${job.job_id}`, { token: alice, body: { status: 'active' } })
    expect(await gwCount()).toBe(1)
    const [gw] = await t.sql`
      SELECT g.priority, g.flags FROM pgsched.runs r JOIN graphile_worker.jobs g ON g.key = 'pgsched_run:' || r.id
      WHERE r.job_id = ${job.job_id}`
    expect(gw!.priority).toBe(9)
    expect(gw!.flags).toEqual({ low: true })
  })

  it('refuses to change a schedule on a one-off job (409)', async () => {
    const { body: job } = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'one', command: 'true' },
    })
    const res = await t.request('PATCH', `/v1/jobs/${job.job_id}`, {
      token: alice,
      body: { schedule: '* * * * *' },
    })
    expect(res.status).toBe(409)
  })
})

describe('DELETE and trigger', () => {
  it('cancels a job and its queued run, removing the executor job', async () => {
    const { body: job } = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: {
        name: 'cancelme',
        command: 'true',
        run_at: new Date(Date.now() + 60_000).toISOString(),
      },
    })
    const res = await t.request('DELETE', `/v1/jobs/${job.job_id}`, { token: alice })
    expect(res.status).toBe(200)
    expect(res.body.status).toBe('cancelled')
    const [run] = await t.sql`SELECT id, status FROM pgsched.runs WHERE job_id = ${job.job_id}`
    expect(run!.status).toBe('cancelled')
    const [gw] =
      await t.sql`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = ${`pgsched_run:${run!.id}`}`
    expect(gw!.n).toBe(0)
  })

  it('triggers a cron job now, outside its schedule', async () => {
    const { body: job } = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'trig', command: 'true', schedule: '0 0 1 1 *' },
    })
    const res = await t.request('POST', `/v1/jobs/${job.job_id}/trigger`, { token: alice })
    expect(res.status).toBe(201)
    expect(res.body).toMatchObject({ job_id: job.job_id, status: 'queued', attempt: 1 })
    const runs = await t.request('GET', `/v1/jobs/${job.job_id}/runs`, { token: alice })
    expect(runs.body.items).toHaveLength(1)
  })

  it('answers 404 problem+json for a job that does not exist', async () => {
    const res = await t.request('GET', '/v1/jobs/999999', { token: alice })
    expect(res.status).toBe(404)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
  })
})

describe('service routes', () => {
  it('serves health, readiness and the OpenAPI document without a token', async () => {
    expect((await t.request('GET', '/healthz')).status).toBe(200)
    const ready = await t.request('GET', '/readyz')
    expect(ready.status).toBe(200)
    expect(ready.body.status).toBe('ready')
    const doc = await t.request('GET', '/openapi.json')
    expect(doc.status).toBe(200)
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining([
        '/v1/jobs',
        '/v1/jobs/{id}',
        '/v1/jobs/{id}/runs',
        '/v1/runs/{id}',
        '/v1/dead-letters',
      ]),
    )
  })
})
