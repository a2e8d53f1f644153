/**
 * Per-owner submission rate limits against real Postgres: the REST API's limit (429 with
 * Retry-After and the RateLimit headers, one bucket per user, a batch costs one token per job),
 * the token bucket's continuous refill, and the SQL API's own limit for pgsched_submitter sessions.
 */
import type postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { setup, type TestBundle } from './helpers.ts'

const LIMIT = 5
let t: TestBundle
let app: postgres.Sql
let role: string

beforeAll(async () => {
  t = await setup({ rateLimitPerMinute: LIMIT })
  ;({ sql: app, role } = await t.submitterSession())
})
afterAll(() => t.close())

const jobCount = async () => (await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs`)[0]!.n
const job = (name: string) => ({ name, command: 'true', run_at: inAnHour() })
const inAnHour = () => new Date(Date.now() + 3600_000).toISOString()
const post = async (sub: string, body: Record<string, unknown>) =>
  t.request('POST', '/v1/jobs', { token: await t.token(sub, 'submitter'), body })
const batch = async (sub: string, n: number) =>
  t.request('POST', '/v1/jobs/batch', {
    token: await t.token(sub, 'submitter'),
    body: { jobs: Array.from({ length: n }, (_, i) => job(`b${i}`)) },
  })
/** The r= (remaining) of a RateLimit header. */
const remaining = (h: Headers) => Number(/;r=(\d+)/.exec(h.get('ratelimit') ?? '')?.[1])

describe('the REST API', () => {
  it('admits the limit, then answers 429 with Retry-After and the RateLimit headers', async () => {
    const left: number[] = []
    for (let i = 0; i < LIMIT; i++) {
      const res = await post('ann', job(`j${i}`))
      expect(res.status).toBe(201)
      expect(res.headers.get('ratelimit-policy')).toContain(`q=${LIMIT};w=60`)
      left.push(remaining(res.headers))
    }
    expect(left).toEqual([4, 3, 2, 1, 0])

    const before = await jobCount()
    const refused = await post('ann', job('one too many'))
    expect(refused.status).toBe(429)
    expect(refused.headers.get('content-type')).toContain('application/problem+json')
    expect(refused.body).toMatchObject({ type: 'urn:pgsched:problem:rate_limited', status: 429 })
    const retryAfter = Number(refused.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(60 / LIMIT)
    expect(refused.headers.get('ratelimit-policy')).toContain(`q=${LIMIT};w=60`)
    expect(remaining(refused.headers)).toBe(0)
    expect(refused.headers.get('ratelimit')).toContain(`t=${retryAfter}`)
    expect(await jobCount()).toBe(before)
  })

  it("does not limit a user for another user's submissions", async () => {
    for (let i = 0; i < LIMIT; i++) await post('bea', job(`j${i}`))
    expect((await post('bea', job('over'))).status).toBe(429)
    const other = await post('cid', job('mine'))
    expect(other.status).toBe(201)
    expect(remaining(other.headers)).toBe(LIMIT - 1)
  })

  it('counts every job of a batch, and refuses a batch larger than the limit', async () => {
    expect((await batch('dee', 3)).status).toBe(201)
    const before = await jobCount()
    const second = await batch('dee', 3)
    expect(second.status).toBe(429)
    expect(remaining(second.headers)).toBe(2)
    expect(await jobCount()).toBe(before)
    // The two tokens left are still there: a batch of two passes.
    expect((await batch('dee', 2)).status).toBe(201)

    const huge = await batch('eve', LIMIT + 1)
    expect(huge.status).toBe(429)
    expect(huge.body.detail).toMatch(/more than the limit/)
    expect(await jobCount()).toBe(before + 2)
    // A batch that can never pass leaves the bucket alone.
    expect(remaining((await batch('eve', LIMIT)).headers)).toBe(0)
  })
})

it('refills the bucket continuously, a token at a time', async () => {
  // The bucket's clock is pinned: each take says how long after the first one it happens.
  const [first] = await t.sql<{ at: Date }[]>`SELECT now() AS at`
  const take = async (n: number, laterMs = 0) =>
    (
      await t.sql`SELECT * FROM pgsched.take_submission_tokens('refill', ${n}::integer, 60,
        ${new Date(first!.at.getTime() + laterMs)}::timestamptz)`
    )[0]
  expect(await take(60)).toEqual({ allowed: true, remaining: 0, retry_after_seconds: 0 })
  expect(await take(1)).toEqual({ allowed: false, remaining: 0, retry_after_seconds: 1 })
  expect(await take(2)).toMatchObject({ allowed: false, retry_after_seconds: 2 })
  expect(await take(1, 1100)).toMatchObject({ allowed: true })
  expect(await take(1, 1100)).toMatchObject({ allowed: false, retry_after_seconds: 1 })
})

it('limits pgsched_submitter sessions in SQL, but not the owner connection', async () => {
  await t.sql`UPDATE pgsched.settings SET rate_limit_per_minute = 3`
  const submit = (name: string) => app`SELECT pgsched.submit_job(name => ${name}, command => 'true',
    run_at => now() + interval '1 hour') AS id`
  for (let i = 0; i < 3; i++) await submit(`s${i}`)
  const before = await jobCount()
  const err = await submit('s3').then(
    () => undefined,
    (e: { code: string; message: string; hint?: string }) => e,
  )
  expect(err).toMatchObject({ code: 'PS429' })
  expect(err!.message).toContain(`${role} may submit 3 jobs a minute`)
  expect(err!.hint).toMatch(/^retry after \d+ s$/)
  const batchErr = await app`SELECT * FROM pgsched.submit_jobs(${app.json([job('b')])})`.catch(
    (e: { code: string }) => e,
  )
  expect(batchErr).toMatchObject({ code: 'PS429' })
  expect(await jobCount()).toBe(before)

  // The owner connection acts for anyone, even for the exhausted owner, without a limit.
  for (let i = 0; i < 5; i++) {
    await t.sql`SELECT pgsched.submit_job(name => 'admin', command => 'true', owner => ${role},
      run_at => now() + interval '1 hour')`
  }
  expect(await jobCount()).toBe(before + 5)
  await t.sql`UPDATE pgsched.settings SET rate_limit_per_minute = 1000`
})
