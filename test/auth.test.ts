import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { mintToken } from '../src/api/tokens.ts'
import { setup, TEST_SECRET, type TestBundle } from './helpers.ts'

let t: TestBundle
let alice: string
let bob: string
let aliceViewer: string
let admin: string

beforeAll(async () => {
  t = await setup()
  alice = await t.token('alice', 'submitter')
  bob = await t.token('bob', 'submitter')
  aliceViewer = await t.token('alice', 'viewer')
  admin = await t.token('root', 'admin')
})
afterAll(() => t.close())

/**
 * Signs a token like pgsched's own (HS256 with the test secret, issuer and audience pgsched),
 * with what `o` changes; `roles: undefined` leaves the roles claim out.
 */
async function craft(o: {
  sub?: string
  roles?: unknown
  exp?: number
  iss?: string
  aud?: string
  secret?: string
  /** Claims to leave out, as a token minted elsewhere might. */
  omit?: ('exp' | 'iss' | 'aud')[]
}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const payload =
    'roles' in o ? (o.roles === undefined ? {} : { roles: o.roles }) : { roles: ['submitter'] }
  const omit = new Set(o.omit)
  let jwt = new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(now - 120)
  if (!omit.has('iss')) jwt = jwt.setIssuer(o.iss ?? 'pgsched')
  if (!omit.has('aud')) jwt = jwt.setAudience(o.aud ?? 'pgsched')
  if (!omit.has('exp')) jwt = jwt.setExpirationTime(o.exp ?? now + 3600)
  if (o.sub !== undefined) jwt = jwt.setSubject(o.sub)
  return jwt.sign(new TextEncoder().encode(o.secret ?? TEST_SECRET))
}

/** A one-off job far in the future, so its run stays queued. */
const later = () => new Date(Date.now() + 3_600_000).toISOString()

async function submit(token: string, name: string) {
  const res = await t.request('POST', '/v1/jobs', {
    token,
    body: { name, command: 'true', run_at: later() },
  })
  expect(res.status).toBe(201)
  return res.body as { job_id: number; owner: string; status: string; priority: number }
}

async function runOf(jobId: number): Promise<number> {
  const [row] = await t.sql`SELECT id FROM pgsched.runs WHERE job_id = ${jobId} ORDER BY id LIMIT 1`
  return row!.id as number
}

async function jobRow(jobId: number) {
  const [job] = await t.sql`
    SELECT status, priority, schedule, updated_at,
      (SELECT count(*)::int FROM pgsched.runs r WHERE r.job_id = j.id) AS runs,
      (SELECT array_agg(r.status ORDER BY r.id) FROM pgsched.runs r WHERE r.job_id = j.id) AS run_statuses
    FROM pgsched.jobs j WHERE j.id = ${jobId}`
  return job
}

function expectProblem(
  res: { status: number; body: { status?: number; type?: string }; headers: Headers },
  status: number,
) {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toBe('application/problem+json')
  expect(res.body.status).toBe(status)
}

describe('authentication: 401 without a valid bearer token', () => {
  const bearer = async (token: Promise<string> | string) => ({
    authorization: `Bearer ${await token}`,
  })
  const now = () => Math.floor(Date.now() / 1000)
  // What each refusal's detail must say: which check failed.
  const cases: [string, () => Promise<Record<string, string>>, RegExp][] = [
    ['no Authorization header', async () => ({}), /Authorization: Bearer/],
    ['a Basic scheme', async () => ({ authorization: 'Basic YWxpY2U6c2VjcmV0' }), /Bearer/],
    ['Bearer without a token', async () => ({ authorization: 'Bearer' }), /Bearer/],
    ['Bearer with two words', async () => ({ authorization: 'Bearer a b' }), /Bearer/],
    ['a bare token without the Bearer scheme', async () => ({ authorization: alice }), /Bearer/],
    ['a garbage token', async () => bearer('not-a-jwt'), /malformed/],
    ['a garbage three-part token', async () => bearer('abc.def.ghi'), /malformed/],
    [
      'a token signed with another secret',
      async () =>
        bearer(mintToken('another-secret-that-is-long-enough-for-hs256', 'alice', ['admin'], 3600)),
      /signature/,
    ],
    ['an expired token', async () => bearer(craft({ sub: 'alice', exp: now() - 60 })), /expired/],
    [
      'a token without exp',
      async () => bearer(craft({ sub: 'alice', omit: ['exp'] })),
      /missing claim exp/,
    ],
    ['a token without sub', async () => bearer(craft({ roles: ['admin'] })), /missing claim sub/],
    [
      'a token with an empty sub',
      async () => bearer(craft({ sub: '', roles: ['admin'] })),
      /missing claim sub/,
    ],
    [
      'a token without a roles claim',
      async () => bearer(craft({ sub: 'alice', roles: undefined })),
      /missing claim roles/,
    ],
    [
      'a token whose roles is not a list',
      async () => bearer(craft({ sub: 'alice', roles: 'admin' })),
      /claim roles/,
    ],
    [
      'a token from another issuer',
      async () => bearer(craft({ sub: 'alice', iss: 'someone' })),
      /issuer.*iss "pgsched"/,
    ],
    [
      'a token for another audience',
      async () => bearer(craft({ sub: 'alice', aud: 'other' })),
      /audience.*aud "pgsched"/,
    ],
    [
      'an HS256 token minted elsewhere, without iss',
      async () => bearer(craft({ sub: 'alice', omit: ['iss'] })),
      /missing claim iss.*iss "pgsched"/,
    ],
    [
      'an HS256 token minted elsewhere, without aud',
      async () => bearer(craft({ sub: 'alice', omit: ['aud'] })),
      /missing claim aud.*aud "pgsched"/,
    ],
    [
      'an unsigned (alg none) token',
      async () => {
        const enc = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, '')
        return bearer(
          `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ sub: 'alice', roles: ['admin'], iss: 'pgsched', aud: 'pgsched', exp: now() + 3600 })}.`,
        )
      },
      /algorithm/,
    ],
  ]

  it.each(cases)('GET /v1/jobs with %s', async (_what, headers, detail) => {
    const res = await t.request('GET', '/v1/jobs', { headers: await headers() })
    expectProblem(res, 401)
    expect(res.body.type).toBe('urn:pgsched:problem:unauthorized')
    expect(res.body.detail).toMatch(detail)
    expect(res.body.detail).not.toContain(TEST_SECRET)
    expect(res.headers.get('www-authenticate')).toBe('Bearer')
  })

  it('answers 431 problem+json for a 100 KB Authorization header', async () => {
    const res = await t.request('GET', '/v1/jobs', {
      headers: { authorization: `Bearer ${'x'.repeat(100_000)}` },
    })
    expectProblem(res, 431)
  })

  it('guards every /v1 route, and a refused submission writes nothing', async () => {
    const [before] = await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs`
    for (const [method, path] of [
      ['POST', '/v1/jobs'],
      ['GET', '/v1/jobs/1'],
      ['PATCH', '/v1/jobs/1'],
      ['DELETE', '/v1/jobs/1'],
      ['POST', '/v1/jobs/1/trigger'],
      ['GET', '/v1/jobs/1/runs'],
      ['GET', '/v1/runs/1'],
      ['POST', '/v1/runs/1/retry'],
      ['GET', '/v1/dead-letters'],
    ] as const) {
      const res = await t.request(method, path, {
        body: method === 'POST' || method === 'PATCH' ? { name: 'x', command: 'true' } : undefined,
      })
      expectProblem(res, 401)
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    }
    const [after] = await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs`
    expect(after!.n).toBe(before!.n)
  })

  it('accepts a valid token, with the Bearer scheme in any case', async () => {
    expect((await t.request('GET', '/v1/jobs', { token: alice })).status).toBe(200)
    const res = await t.request('GET', '/v1/jobs', {
      headers: { authorization: `bearer ${alice}` },
    })
    expect(res.status).toBe(200)
  })
})

describe('authorization: roles (403)', () => {
  it('lets a viewer read but not change anything', async () => {
    const job = await submit(alice, 'viewer-target')
    const runId = await runOf(job.job_id)
    await t.sql`UPDATE pgsched.runs SET status = 'dead', finished_at = now() WHERE id = ${runId}`
    const before = await jobRow(job.job_id)

    expect((await t.request('GET', '/v1/jobs', { token: aliceViewer })).status).toBe(200)
    expect((await t.request('GET', `/v1/jobs/${job.job_id}`, { token: aliceViewer })).status).toBe(
      200,
    )
    expect(
      (await t.request('GET', `/v1/jobs/${job.job_id}/runs`, { token: aliceViewer })).status,
    ).toBe(200)
    expect((await t.request('GET', `/v1/runs/${runId}`, { token: aliceViewer })).status).toBe(200)
    expect((await t.request('GET', '/v1/dead-letters', { token: aliceViewer })).status).toBe(200)

    const [jobsBefore] = await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs`
    const writes: [string, string, unknown][] = [
      ['POST', '/v1/jobs', { name: 'nope', command: 'true' }],
      ['PATCH', `/v1/jobs/${job.job_id}`, { status: 'paused' }],
      ['PATCH', `/v1/jobs/${job.job_id}`, { priority: 9 }],
      ['DELETE', `/v1/jobs/${job.job_id}`, undefined],
      ['POST', `/v1/jobs/${job.job_id}/trigger`, undefined],
      ['POST', `/v1/runs/${runId}/retry`, undefined],
    ]
    for (const [method, path, body] of writes) {
      const res = await t.request(method, path, { token: aliceViewer, body })
      expectProblem(res, 403)
      expect(res.body.type).toBe('urn:pgsched:problem:forbidden')
    }
    const [jobsAfter] = await t.sql`SELECT count(*)::int AS n FROM pgsched.jobs`
    expect(jobsAfter!.n).toBe(jobsBefore!.n)
    expect(await jobRow(job.job_id)).toEqual(before)
  })

  it.each([
    ['an empty roles list', []],
    ['only unknown roles', ['superuser', 'root']],
  ])('refuses a token with %s, even on GET', async (_what, roles) => {
    const token = await craft({ sub: 'alice', roles })
    for (const path of ['/v1/jobs', '/v1/dead-letters']) {
      const res = await t.request('GET', path, { token })
      expectProblem(res, 403)
    }
    const res = await t.request('POST', '/v1/jobs', {
      token,
      body: { name: 'x', command: 'true' },
    })
    expectProblem(res, 403)
  })
})

describe('authorization: ownership', () => {
  let aliceJob: { job_id: number }
  let bobJob: { job_id: number }
  let bobRun: number

  beforeAll(async () => {
    aliceJob = await submit(alice, 'owned-by-alice')
    bobJob = await submit(bob, 'owned-by-bob')
    bobRun = await runOf(bobJob.job_id)
  })

  const ids = (body: { items: { job_id: number }[] }) => body.items.map((j) => j.job_id)
  const owners = (body: { items: { owner: string }[] }) => new Set(body.items.map((j) => j.owner))

  it("lists only the caller's own jobs", async () => {
    const mine = await t.request('GET', '/v1/jobs?limit=500', { token: alice })
    expect(mine.status).toBe(200)
    expect(ids(mine.body)).toContain(aliceJob.job_id)
    expect(ids(mine.body)).not.toContain(bobJob.job_id)
    expect(owners(mine.body)).toEqual(new Set(['alice']))
    const bobs = await t.request('GET', '/v1/jobs?limit=500', { token: bob })
    expect(ids(bobs.body)).toContain(bobJob.job_id)
    expect(owners(bobs.body)).toEqual(new Set(['bob']))
    const byName = await t.request('GET', '/v1/jobs?name=owned-by-bob', { token: alice })
    expect(byName.body.items).toEqual([])
  })

  it("answers 404 for another user's job, as for a missing one, and leaves it unchanged", async () => {
    const before = await jobRow(bobJob.job_id)
    const id = bobJob.job_id
    const attempts: [string, string, unknown][] = [
      ['GET', `/v1/jobs/${id}`, undefined],
      ['PATCH', `/v1/jobs/${id}`, { status: 'paused', priority: 1 }],
      ['DELETE', `/v1/jobs/${id}`, undefined],
      ['POST', `/v1/jobs/${id}/trigger`, undefined],
      ['GET', `/v1/jobs/${id}/runs`, undefined],
    ]
    for (const [method, path, body] of attempts) {
      const res = await t.request(method, path, { token: alice, body })
      expectProblem(res, 404)
      expect(res.body.type).toBe('urn:pgsched:problem:not_found')
      // The same answer as for a job that does not exist: existence does not leak.
      const missing = await t.request(method, path.replace(String(id), '987654321'), {
        token: alice,
        body,
      })
      expect(missing.status).toBe(404)
      expect(res.body.detail).toBe(missing.body.detail.replace('987654321', String(id)))
    }
    expect(await jobRow(id)).toEqual(before)
    const seen = await t.request('GET', `/v1/jobs/${id}`, { token: bob })
    expect(seen.body).toMatchObject({ status: 'active', priority: 5, owner: 'bob' })
  })

  it("answers 404 for another user's run", async () => {
    const res = await t.request('GET', `/v1/runs/${bobRun}`, { token: alice })
    expectProblem(res, 404)
    expect((await t.request('GET', `/v1/runs/${bobRun}`, { token: aliceViewer })).status).toBe(404)
    expect((await t.request('GET', `/v1/runs/${bobRun}`, { token: bob })).status).toBe(200)
  })

  it('shows a viewer only the jobs of its own sub', async () => {
    const list = await t.request('GET', '/v1/jobs?limit=500', { token: aliceViewer })
    expect(list.status).toBe(200)
    expect(ids(list.body)).toContain(aliceJob.job_id)
    expect(owners(list.body)).toEqual(new Set(['alice']))
    expect(
      (await t.request('GET', `/v1/jobs/${aliceJob.job_id}`, { token: aliceViewer })).status,
    ).toBe(200)
    const other = await t.request('GET', `/v1/jobs/${bobJob.job_id}`, { token: aliceViewer })
    expectProblem(other, 404)
  })

  it("lets an admin list and read everyone's jobs and runs", async () => {
    const list = await t.request('GET', '/v1/jobs?limit=500', { token: admin })
    expect(ids(list.body)).toEqual(expect.arrayContaining([aliceJob.job_id, bobJob.job_id]))
    for (const job of [aliceJob, bobJob]) {
      const res = await t.request('GET', `/v1/jobs/${job.job_id}`, { token: admin })
      expect(res.status).toBe(200)
      expect(res.body.job_id).toBe(job.job_id)
    }
    expect((await t.request('GET', `/v1/runs/${bobRun}`, { token: admin })).status).toBe(200)
    const runs = await t.request('GET', `/v1/jobs/${bobJob.job_id}/runs`, { token: admin })
    expect(runs.body.items.map((r: { run_id: number }) => r.run_id)).toEqual([bobRun])
  })

  it("lets an admin cancel another user's job", async () => {
    const job = await submit(bob, 'bob-cancelled-by-admin')
    const res = await t.request('DELETE', `/v1/jobs/${job.job_id}`, { token: admin })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ job_id: job.job_id, status: 'cancelled', owner: 'bob' })
    const seen = await t.request('GET', `/v1/jobs/${job.job_id}`, { token: bob })
    expect(seen.body.status).toBe('cancelled')
  })

  it('scopes dead letters and their replay to the owner', async () => {
    const aliceDead = await submit(alice, 'alice-dead')
    const bobDead = await submit(bob, 'bob-dead')
    const aliceDeadRun = await runOf(aliceDead.job_id)
    const bobDeadRun = await runOf(bobDead.job_id)
    await t.sql`
      UPDATE pgsched.runs SET status = 'dead', finished_at = now()
      WHERE id IN ${t.sql([aliceDeadRun, bobDeadRun])}`
    const runIds = (body: { items: { run_id: number }[] }) => body.items.map((r) => r.run_id)

    const forAlice = await t.request('GET', '/v1/dead-letters?limit=500', { token: alice })
    expect(forAlice.status).toBe(200)
    expect(runIds(forAlice.body)).toContain(aliceDeadRun)
    expect(runIds(forAlice.body)).not.toContain(bobDeadRun)
    const forViewer = await t.request('GET', '/v1/dead-letters?limit=500', { token: aliceViewer })
    expect(runIds(forViewer.body)).toContain(aliceDeadRun)
    expect(runIds(forViewer.body)).not.toContain(bobDeadRun)
    const forBob = await t.request('GET', '/v1/dead-letters?limit=500', { token: bob })
    expect(runIds(forBob.body)).toContain(bobDeadRun)
    expect(runIds(forBob.body)).not.toContain(aliceDeadRun)
    const forAdmin = await t.request('GET', '/v1/dead-letters?limit=500', { token: admin })
    expect(runIds(forAdmin.body)).toEqual(expect.arrayContaining([aliceDeadRun, bobDeadRun]))

    const stolen = await t.request('POST', `/v1/runs/${bobDeadRun}/retry`, { token: alice })
    expectProblem(stolen, 404)
    const [still] = await t.sql`SELECT status FROM pgsched.runs WHERE id = ${bobDeadRun}`
    expect(still!.status).toBe('dead')
    const own = await t.request('POST', `/v1/runs/${bobDeadRun}/retry`, { token: bob })
    expect(own.status).toBe(200)
    expect(own.body).toMatchObject({ run_id: bobDeadRun, status: 'queued', attempt: 2 })
  })
})

describe('service routes', () => {
  it('serves /healthz, /readyz and /openapi.json without a token', async () => {
    for (const path of ['/healthz', '/readyz', '/openapi.json']) {
      const res = await t.request('GET', path)
      expect(res.status, path).toBe(200)
      expect(res.headers.get('www-authenticate')).toBeNull()
    }
  })

  it('documents bearer auth and the submission schema in the OpenAPI document', async () => {
    const { body: doc } = await t.request('GET', '/openapi.json')
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({
      type: 'http',
      scheme: 'bearer',
    })
    const post = doc.paths['/v1/jobs'].post
    expect(post.security).toEqual([{ bearerAuth: [] }])
    expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(['201', '401', '403']))
    let schema = post.requestBody.content['application/json'].schema
    if (schema.$ref) {
      const name = (schema.$ref as string).replace('#/components/schemas/', '')
      schema = doc.components.schemas[name]
    }
    expect(Object.keys(schema.properties)).toEqual(
      expect.arrayContaining(['name', 'command', 'schedule', 'priority']),
    )
    expect(schema.required).toContain('name')
    expect(schema.properties.priority).toMatchObject({ minimum: 1, maximum: 10 })
  })
})
