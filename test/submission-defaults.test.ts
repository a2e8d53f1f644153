/**
 * The SQL API keeps its own copy of the submission defaults and limits (parameter DEFAULTs,
 * CHECKs, the checks in _submit_job); src/core/submission-defaults.ts is the table the REST API
 * reads. These tests hold the two together: each default and each bound of the table is what
 * pgsched.submit_job does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { SUBMISSION_DEFAULTS as D } from '../src/core/submission-defaults.ts'
import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle
beforeAll(async () => {
  t = await setup()
})
afterAll(async () => {
  await t?.close()
})

/** Submits one command job through pgsched.submit_jobs with `fields`; its id, or the error. */
async function submit(fields: Record<string, unknown>): Promise<{ id?: number; error?: string }> {
  const job = { name: 'defaults', command: 'true', ...fields }
  try {
    const [row] = await t.sql<{ job_id: number }[]>`
      SELECT job_id FROM pgsched.submit_jobs(${t.sql.json([job] as never)}::jsonb)`
    return { id: row!.job_id }
  } catch (e) {
    return { error: (e as Error).message }
  }
}

describe('the SQL API agrees with SUBMISSION_DEFAULTS', () => {
  it('gives a job submitted with nothing but a name and a command the table defaults', async () => {
    const single = await t.sql`SELECT pgsched.submit_job(name => 'bare', command => 'true') AS id`
    const ids = [single[0]!.id, (await submit({})).id]
    const rows = await t.sql`
      SELECT priority, max_retries, backoff_base_seconds, timeout_seconds, timezone,
        concurrency_policy, network
      FROM pgsched.jobs WHERE id = ANY (${ids}::bigint[])`
    expect(rows).toHaveLength(2)
    for (const row of rows)
      expect(row).toEqual({
        priority: D.priority.default,
        max_retries: D.max_retries.default,
        backoff_base_seconds: D.backoff_base_seconds.default,
        timeout_seconds: D.timeout_seconds.default,
        timezone: D.timezone,
        concurrency_policy: D.concurrency_policy,
        network: D.network,
      })
  })

  for (const field of [
    'priority',
    'max_retries',
    'backoff_base_seconds',
    'timeout_seconds',
  ] as const) {
    it(`accepts ${field} from ${D[field].min} to ${D[field].max} and refuses one beyond`, async () => {
      expect((await submit({ [field]: D[field].min })).error).toBeUndefined()
      expect((await submit({ [field]: D[field].max })).error).toBeUndefined()
      expect((await submit({ [field]: D[field].min - 1 })).error).toContain(field)
      expect((await submit({ [field]: D[field].max + 1 })).error).toContain(field)
    })
  }

  it('accepts a name of the longest length and refuses a longer one', async () => {
    expect((await submit({ name: 'n'.repeat(D.name_max_length) })).error).toBeUndefined()
    expect((await submit({ name: 'n'.repeat(D.name_max_length + 1) })).error).toContain('name')
  })

  it('accepts as many dependencies as the table allows and refuses one more', async () => {
    const dep = (await submit({ name: 'dep' })).id!
    const deps = (n: number) => Array.from({ length: n }, () => dep)
    // Repeated ids count as given: the bound is on the list.
    expect((await submit({ depends_on: deps(D.depends_on_max) })).error).toBeUndefined()
    expect((await submit({ depends_on: deps(D.depends_on_max + 1) })).error).toContain('depends_on')
  })

  it('refuses a run_at before the earliest time and takes one at it', async () => {
    expect((await submit({ run_at: D.time_min })).error).toBeUndefined()
    const before = new Date(Date.parse(D.time_min) - 1000).toISOString()
    expect((await submit({ run_at: before })).error).toContain('run_at')
  })

  it('refuses a job limit below its floor and takes one at it', async () => {
    for (const [key, floor] of Object.entries(D.limit_floors)) {
      expect((await submit({ limits: { [key]: floor } })).error, key).toBeUndefined()
      expect((await submit({ limits: { [key]: floor - 1 } })).error, key).toContain(key)
    }
  })

  it('refuses a batch of more jobs than the table allows', async () => {
    const jobs = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ name: `b${i}`, command: 'true' }))
    const refused =
      await t.sql`SELECT * FROM pgsched.submit_jobs(${t.sql.json(jobs(D.batch_max_jobs + 1) as never)}::jsonb)`.catch(
        (e: Error) => e.message,
      )
    expect(refused).toContain('jobs')
    const [{ n } = { n: 0 }] = await t.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pgsched.submit_jobs(${t.sql.json(jobs(D.batch_max_jobs) as never)}::jsonb)`
    expect(n).toBe(D.batch_max_jobs)
  })
})
