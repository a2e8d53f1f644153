/**
 * Per-job resource limits and network access at submission: REST (single and batch) and SQL,
 * the admin's ceilings, and who may give a job network access.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { setup, TEST_SECRET, type TestBundle } from './helpers.ts'
import { freePort, startPgsched } from './processes.ts'

let t: TestBundle
let submitter: string
let admin: string

beforeAll(async () => {
  t = await setup()
  submitter = await t.token('lim-alice', 'submitter')
  admin = await t.token('lim-root', 'admin')
})
afterAll(async () => {
  await t?.close()
})

async function jobCount(): Promise<number> {
  const [row] = await t.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgsched.jobs`
  return row!.n
}

describe('limits on REST submissions', () => {
  it('stores the limits asked for and shows them on the job', async () => {
    const res = await t.request('POST', '/v1/jobs', {
      token: submitter,
      body: { name: 'lim', command: 'true', limits: { memory_mb: 64, cpu_seconds: 5 } },
    })
    expect(res.status).toBe(201)
    expect(res.body).toMatchObject({ limits: { memory_mb: 64, cpu_seconds: 5 }, network: false })
    const got = await t.request('GET', `/v1/jobs/${res.body.job_id}`, { token: submitter })
    expect(got.body.limits).toEqual({ memory_mb: 64, cpu_seconds: 5 })
  })

  it('refuses a limit above the admin ceiling with 400 naming the field, writing nothing', async () => {
    const before = await jobCount()
    const res = await t.request('POST', '/v1/jobs', {
      token: submitter,
      body: { name: 'greedy', command: 'true', limits: { memory_mb: 999_999 } },
    })
    expect(res.status).toBe(400)
    expect(res.body.errors).toEqual([
      { field: 'limits.memory_mb', message: expect.stringContaining('ceiling') },
    ])
    expect(await jobCount()).toBe(before)
  })

  it('refuses limits on a task and unknown limit names', async () => {
    const task = await t.request('POST', '/v1/jobs', {
      token: submitter,
      body: { name: 'task', task: 'echo', limits: { memory_mb: 64 } },
    })
    expect(task.status).toBe(400)
    expect(task.body.errors[0].field).toBe('limits')
    const unknown = await t.request('POST', '/v1/jobs', {
      token: submitter,
      body: { name: 'x', command: 'true', limits: { gpus: 1 } },
    })
    expect(unknown.status).toBe(400)
    expect(unknown.body.errors[0].field).toBe('limits.gpus')
  })

  it('lets an admin raise a ceiling, after which the same ask passes', async () => {
    const ask = { name: 'big', command: 'true', limits: { max_processes: 5000 } }
    expect((await t.request('POST', '/v1/jobs', { token: submitter, body: ask })).status).toBe(400)
    const denied = await t.request('PUT', '/v1/admin/job-limits', {
      token: submitter,
      body: { ceilings: { max_processes: 10_000 } },
    })
    expect(denied.status).toBe(403)
    const set = await t.request('PUT', '/v1/admin/job-limits', {
      token: admin,
      body: { ceilings: { max_processes: 10_000 } },
    })
    expect(set.status).toBe(200)
    expect(set.body.ceilings).toMatchObject({ max_processes: 10_000, memory_mb: 4096 })
    expect((await t.request('POST', '/v1/jobs', { token: submitter, body: ask })).status).toBe(201)
    await t.request('PUT', '/v1/admin/job-limits', {
      token: admin,
      body: { ceilings: { max_processes: 4096 } },
    })
  })

  it('checks every job of a batch and names the element at fault', async () => {
    const before = await jobCount()
    const res = await t.request('POST', '/v1/jobs/batch', {
      token: submitter,
      body: {
        jobs: [
          { name: 'a', command: 'true', limits: { memory_mb: 32 } },
          { name: 'b', command: 'true', limits: { open_files: 10_000_000 } },
        ],
      },
    })
    expect(res.status).toBe(400)
    expect(res.body.errors[0].field).toBe('jobs[1].limits.open_files')
    expect(await jobCount()).toBe(before)

    const ok = await t.request('POST', '/v1/jobs/batch', {
      token: submitter,
      body: {
        jobs: [
          { name: 'a', command: 'true', limits: { memory_mb: 32 } },
          { name: 'b', command: 'true' },
        ],
      },
    })
    expect(ok.status).toBe(201)
    expect(ok.body.jobs.map((j: { limits: unknown }) => j.limits)).toEqual([{ memory_mb: 32 }, {}])
  })
})

describe('network access', () => {
  it('is off by default, refused to a submitter (403 with the reason) and given by an admin', async () => {
    const plain = await t.request('POST', '/v1/jobs', {
      token: submitter,
      body: { name: 'n0', command: 'true' },
    })
    expect(plain.body.network).toBe(false)
    const before = await jobCount()
    const refused = await t.request('POST', '/v1/jobs', {
      token: submitter,
      body: { name: 'n1', command: 'true', network: true },
    })
    expect(refused.status).toBe(403)
    expect(refused.body.detail).toContain('only an admin')
    const batch = await t.request('POST', '/v1/jobs/batch', {
      token: submitter,
      body: { jobs: [{ name: 'n2', command: 'true', network: true }] },
    })
    expect(batch.status).toBe(403)
    expect(await jobCount()).toBe(before)
    const granted = await t.request('POST', '/v1/jobs', {
      token: admin,
      body: { name: 'n3', command: 'true', network: true },
    })
    expect(granted.status).toBe(201)
    expect(granted.body.network).toBe(true)
  })

  it('is given to a submitter who asks when the operator set PGSCHED_JOB_NETWORK=allow', async () => {
    const port = await freePort()
    const api = await startPgsched('api', {
      DATABASE_URL: t.url,
      PGSCHED_JWT_SECRET: TEST_SECRET,
      PORT: String(port),
      PGSCHED_JOB_NETWORK: 'allow',
    })
    try {
      const submit = (path: string, body: object) =>
        fetch(`http://127.0.0.1:${port}${path}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${submitter}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        })
      const one = await submit('/v1/jobs', { name: 'n4', command: 'true', network: true })
      expect(one.status).toBe(201)
      expect(await one.json()).toMatchObject({ name: 'n4', network: true })
      const batch = await submit('/v1/jobs/batch', {
        jobs: [{ name: 'n5', command: 'true', network: true }],
      })
      expect(batch.status).toBe(201)
      const [job] = await t.sql`SELECT owner, network FROM pgsched.jobs WHERE name = 'n5'`
      expect(job).toEqual({ owner: 'lim-alice', network: true })
    } finally {
      await api.stop()
    }
  })
})

describe('limits from SQL', () => {
  it('stores limits, refuses asks over the ceiling and network for a plain submitter', async () => {
    const { sql: app, role } = await t.submitterSession()
    const [row] = await app`
      SELECT pgsched.submit_job(name => 'sql-lim', command => 'true',
        limits => '{"memory_mb": 128, "file_size_mb": 2}') AS id`
    const [job] = await t.sql`SELECT owner, limits, network FROM pgsched.jobs WHERE id = ${row!.id}`
    expect(job).toEqual({
      owner: role,
      limits: { memory_mb: 128, file_size_mb: 2 },
      network: false,
    })

    await expect(
      app`SELECT pgsched.submit_job(name => 'x', command => 'true', limits => '{"cpu_seconds": 0}')`,
    ).rejects.toMatchObject({ code: '22023', column_name: 'limits.cpu_seconds' })
    await expect(
      app`SELECT pgsched.submit_job(name => 'x', command => 'true', network => true)`,
    ).rejects.toMatchObject({ code: '42501', message: expect.stringContaining('only an admin') })
    await expect(
      app`SELECT * FROM pgsched.submit_jobs('[{"name": "x", "command": "true"}, {"name": "y", "command": "true", "limits": {"memory_mb": 1e9}}]')`,
    ).rejects.toMatchObject({ code: '22023', column_name: 'jobs[1].limits.memory_mb' })
    await expect(
      app`SELECT * FROM pgsched.set_job_limit_ceilings('{"memory_mb": 100000}')`,
    ).rejects.toMatchObject({ code: '42501' })
    await expect(
      t.sql`SELECT * FROM pgsched.set_job_limit_ceilings('{"memory_mb": 8}')`,
    ).rejects.toMatchObject({ code: '22023', column_name: 'memory_mb' })
    await expect(
      t.sql`SELECT * FROM pgsched.set_job_limit_ceilings('{"gpus": 2}')`,
    ).rejects.toMatchObject({ code: '22023', column_name: 'gpus' })
  })

  it('keeps an idempotent replay as first submitted', async () => {
    const first = await t.sql`
      SELECT pgsched.submit_job(name => 'idem', command => 'true', owner => 'lim-bob',
        idempotency_key => 'k1', limits => '{"memory_mb": 64}') AS id`
    const again = await t.sql`
      SELECT pgsched.submit_job(name => 'idem', command => 'true', owner => 'lim-bob',
        idempotency_key => 'k1', limits => '{"memory_mb": 256}', network => true) AS id`
    expect(again[0]!.id).toBe(first[0]!.id)
    const [job] = await t.sql`SELECT limits, network FROM pgsched.jobs WHERE id = ${first[0]!.id}`
    expect(job).toEqual({ limits: { memory_mb: 64 }, network: false })
  })

  it('refuses run_at before 1970, also inside a batch, with the field named', async () => {
    await expect(
      t.sql`SELECT pgsched.submit_job(name => 'old', command => 'true', run_at => '1900-01-01Z')`,
    ).rejects.toMatchObject({ code: '22023', column_name: 'run_at' })
    await expect(
      t.sql`SELECT * FROM pgsched.submit_jobs('[{"name": "x", "command": "true", "run_at": "0000-01-01T00:00:00Z"}]')`,
    ).rejects.toMatchObject({ code: '22023', column_name: 'jobs[0].run_at' })
  })
})
