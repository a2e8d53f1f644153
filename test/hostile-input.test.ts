/**
 * Hostile input is refused with 400 problem+json naming the field, before it reaches the database,
 * and changes nothing: NUL bytes, unpaired surrogates, deep or large payloads, times out of range,
 * oversized headers; roles are checked before bodies are parsed.
 */
import { Hono } from 'hono'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { onError } from '../src/api/middleware/problem.ts'
import { SUBMISSION_DEFAULTS } from '../src/core/submission-defaults.ts'
import { silentLogger } from '../src/core/types.ts'
import { setup, type TestBundle } from './helpers.ts'

const { payload_max_depth: PAYLOAD_MAX_DEPTH, payload_max_bytes: PAYLOAD_MAX_BYTES } =
  SUBMISSION_DEFAULTS

let t: TestBundle
let alice: string
let viewer: string
let admin: string
let scheduled: number

beforeAll(async () => {
  t = await setup()
  alice = await t.token('alice', 'submitter')
  viewer = await t.token('alice', 'viewer')
  admin = await t.token('root', 'admin')
  const res = await t.request('POST', '/v1/jobs', {
    token: alice,
    body: { name: 'nightly', command: 'true', schedule: '0 3 * * *' },
  })
  expect(res.status).toBe(201)
  scheduled = res.body.job_id
})
afterAll(() => t.close())

/** Row counts and newest ids of every table a request could write, and the settings. */
async function snapshot() {
  const [row] = await t.sql`
    SELECT (SELECT count(*) || ':' || coalesce(max(id), 0) FROM pgsched.jobs) AS jobs,
           (SELECT count(*) || ':' || coalesce(max(id), 0) FROM pgsched.runs) AS runs,
           (SELECT md5(string_agg(j::text, ',' ORDER BY j.id)) FROM pgsched.jobs j) AS job_rows,
           (SELECT count(*) FROM pgsched.degradation_events) AS degradation_events,
           (SELECT md5(string_agg(s::text, ',')) FROM pgsched.settings s) AS settings`
  return row
}

type Answer = Awaited<ReturnType<TestBundle['request']>>

function expectRefused(res: Answer, status: number, field?: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status)
  expect(res.headers.get('content-type')).toBe('application/problem+json')
  expect(res.body.status).toBe(status)
  if (field !== undefined) {
    expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field)
  }
}

const nested = (depth: number) => JSON.parse('['.repeat(depth) + ']'.repeat(depth))

describe('payloads', () => {
  it(`accepts a payload ${PAYLOAD_MAX_DEPTH} levels deep and refuses one deeper, also in a batch`, async () => {
    const ok = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'deep-ok', task: 'echo', payload: nested(PAYLOAD_MAX_DEPTH) },
    })
    expect(ok.status).toBe(201)
    const before = await snapshot()
    for (const depth of [PAYLOAD_MAX_DEPTH + 1, 6000, 100_000]) {
      const body = `{"name":"deep","task":"echo","payload":${'['.repeat(depth)}${']'.repeat(depth)}}`
      expectRefused(await t.request('POST', '/v1/jobs', { token: alice, body }), 400, 'payload')
      const batch = `{"jobs":[{"name":"ok","task":"echo"},${body}]}`
      expectRefused(
        await t.request('POST', '/v1/jobs/batch', { token: alice, body: batch }),
        400,
        'jobs[1].payload',
      )
    }
    const deepObject = `{"name":"deep","task":"echo","payload":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`
    expectRefused(
      await t.request('POST', '/v1/jobs', { token: alice, body: deepObject }),
      400,
      'payload',
    )
    expect(await snapshot()).toEqual(before)
  })

  it(`accepts a payload of ${PAYLOAD_MAX_BYTES / 1024} KiB and refuses a larger one`, async () => {
    // A JSON string of n characters takes n + 2 bytes.
    const ok = await t.request('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'big-ok', task: 'echo', payload: 'x'.repeat(PAYLOAD_MAX_BYTES - 2) },
    })
    expect(ok.status).toBe(201)
    const before = await snapshot()
    for (const payload of [
      'x'.repeat(PAYLOAD_MAX_BYTES - 1),
      // Multi-byte characters count as their UTF-8 bytes.
      'é'.repeat(PAYLOAD_MAX_BYTES / 2),
      Array.from({ length: PAYLOAD_MAX_BYTES / 2 }, () => 0),
    ]) {
      expectRefused(
        await t.request('POST', '/v1/jobs', {
          token: alice,
          body: { name: 'big', task: 'echo', payload },
        }),
        400,
        'payload',
      )
    }
    expect(await snapshot()).toEqual(before)
  })
})

describe('text Postgres cannot store', () => {
  const nul = 'a\u0000b'
  const lone = 'a\ud800b'

  it.each([
    ['name', { name: nul, command: 'true' }],
    ['command', { name: 'x', command: nul }],
    ['task', { name: 'x', task: nul }],
    ['schedule', { name: 'x', command: 'true', schedule: nul }],
    ['timezone', { name: 'x', command: 'true', schedule: '0 3 * * *', timezone: nul }],
    ['queue', { name: 'x', command: 'true', queue: nul }],
    ['payload', { name: 'x', task: 'echo', payload: { text: nul } }],
    ['payload', { name: 'x', task: 'echo', payload: { [nul]: 1 } }],
    ['name', { name: lone, command: 'true' }],
    ['payload', { name: 'x', task: 'echo', payload: [lone] }],
  ])('POST /v1/jobs: 400 for %s', async (field, body) => {
    const before = await snapshot()
    expectRefused(await t.request('POST', '/v1/jobs', { token: alice, body }), 400, field)
    expectRefused(
      await t.request('POST', '/v1/jobs/batch', {
        token: alice,
        body: { jobs: [{ name: 'fine', command: 'true' }, body] },
      }),
      400,
      `jobs[1].${field}`,
    )
    expect(await snapshot()).toEqual(before)
  })

  it('POST /v1/jobs/batch: 400 for a NUL in ref and in a depends_on ref', async () => {
    const before = await snapshot()
    expectRefused(
      await t.request('POST', '/v1/jobs/batch', {
        token: alice,
        body: { jobs: [{ name: 'x', command: 'true', ref: nul }] },
      }),
      400,
      'jobs[0].ref',
    )
    const res = await t.request('POST', '/v1/jobs/batch', {
      token: alice,
      body: {
        jobs: [
          { name: 'a', command: 'true', ref: 'a' },
          { name: 'b', command: 'true', depends_on: [nul] },
        ],
      },
    })
    expectRefused(res, 400)
    expect(res.body.errors[0].field).toMatch(/^jobs\[1\]\.depends_on/)
    expect(await snapshot()).toEqual(before)
  })

  it('PATCH /v1/jobs/{id}: 400 for a NUL in schedule or timezone', async () => {
    const before = await snapshot()
    for (const [field, patch] of [
      ['schedule', { schedule: `0 3 * * *${nul}` }],
      ['timezone', { timezone: nul }],
      ['timezone', { timezone: lone }],
    ] as const) {
      expectRefused(
        await t.request('PATCH', `/v1/jobs/${scheduled}`, { token: alice, body: patch }),
        400,
        field,
      )
    }
    expect(await snapshot()).toEqual(before)
  })

  it('GET /v1/jobs: 400 for a NUL in the name query parameter', async () => {
    expectRefused(await t.request('GET', '/v1/jobs?name=%00', { token: alice }), 400, 'name')
    expectRefused(await t.request('GET', '/v1/jobs?name=a%00b', { token: alice }), 400, 'name')
    expectRefused(await t.request('GET', '/v1/jobs?cursor=%00', { token: alice }), 400, 'cursor')
    expectRefused(await t.request('GET', '/v1/jobs/%00', { token: alice }), 400, 'id')
  })

  it('PUT /v1/admin/degradation: 400 for a NUL in reason', async () => {
    const before = await snapshot()
    expectRefused(
      await t.request('PUT', '/v1/admin/degradation', {
        token: admin,
        body: { mode: 'manual', level: 1, reason: nul },
      }),
      400,
      'reason',
    )
    expect(await snapshot()).toEqual(before)
  })
})

describe('times out of range', () => {
  it.each(['0000-01-01T00:00:00Z', '1969-12-31T23:59:59Z', '9999-12-31T23:00:00-05:00'])(
    'run_at %s: 400 naming run_at, also in a batch',
    async (runAt) => {
      const before = await snapshot()
      const body = { name: 'when', command: 'true', run_at: runAt }
      expectRefused(await t.request('POST', '/v1/jobs', { token: alice, body }), 400, 'run_at')
      expectRefused(
        await t.request('POST', '/v1/jobs/batch', { token: alice, body: { jobs: [body] } }),
        400,
        'jobs[0].run_at',
      )
      expect(await snapshot()).toEqual(before)
    },
  )

  it('accepts the first and last times of the range', async () => {
    for (const runAt of ['1970-01-01T00:00:00Z', '9999-12-31T23:59:59Z']) {
      const res = await t.request('POST', '/v1/jobs', {
        token: alice,
        body: { name: 'edge', command: 'true', run_at: runAt },
      })
      expect(res.status, JSON.stringify(res.body)).toBe(201)
    }
  })
})

describe('roles before bodies', () => {
  it.each([
    ['PUT', '/v1/admin/degradation', { mode: 'nonsense', level: 99 }],
    ['PUT', '/v1/admin/degradation', 'not json at all'],
    ['PUT', '/v1/admin/job-limits', { ceilings: { memory_mb: -1 } }],
    ['GET', '/v1/admin/job-limits', undefined],
  ])('a submitter gets 403 for %s %s whatever it sends', async (method, path, body) => {
    expectRefused(await t.request(method, path, { token: alice, body }), 403)
  })

  it('a viewer gets 403 for a write whatever it sends', async () => {
    for (const [method, path, body] of [
      ['POST', '/v1/jobs', { name: 'a\u0000', payload: nested(100) }],
      ['POST', '/v1/jobs/batch', { jobs: [] }],
      ['PATCH', '/v1/jobs/not-a-number', { status: 'nonsense' }],
      ['DELETE', '/v1/jobs/0', undefined],
      ['POST', '/v1/runs/-1/retry', undefined],
    ] as const) {
      expectRefused(await t.request(method, path, { token: viewer, body }), 403)
    }
  })
})

describe('headers and media types', () => {
  it('answers 431 problem+json for an oversized header, token or not', async () => {
    for (const headers of [
      { authorization: `Bearer ${'a'.repeat(100_000)}` },
      { authorization: `Bearer ${alice}`, 'x-padding': 'p'.repeat(100_000) },
      Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`x-pad-${i}`, 'p'.repeat(4000)])),
    ]) {
      const res = await t.request('GET', '/v1/jobs', { headers })
      expectRefused(res, 431)
      expect(res.body.detail).not.toContain('aaaa')
    }
  })

  it('answers 415 problem+json for a body that is not JSON', async () => {
    const res = await t.app.request('/v1/jobs', {
      method: 'POST',
      headers: { authorization: `Bearer ${alice}`, 'content-type': 'text/plain' },
      body: 'name=x',
    })
    expect(res.status).toBe(415)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
  })

  it('refuses a NUL in the Idempotency-Key header', async () => {
    // A Request cannot carry a NUL in a header (fetch refuses it), so the schema is asked.
    const { SubmissionHeadersSchema } = await import('../src/api/schemas.ts')
    const parsed = SubmissionHeadersSchema.safeParse({ 'idempotency-key': 'k\u0000' })
    expect(parsed.success).toBe(false)
    expect(parsed.error!.issues[0]!.path).toEqual(['idempotency-key'])
  })
})

describe('database data errors that get past the schemas', () => {
  it.each([
    ['22021', 'invalid byte sequence for encoding "UTF8": 0x00'],
    ['22008', 'timestamp out of range'],
    ['54001', 'stack depth limit exceeded'],
    ['22P05', 'unsupported Unicode escape sequence'],
  ])('%s answers 400 naming the column when known', async (code, message) => {
    const app = new Hono()
    app.onError(onError(silentLogger))
    app.get('/with', () => {
      throw Object.assign(new Error(message), { code, column_name: 'run_at' })
    })
    app.get('/without', () => {
      throw Object.assign(new Error(message), { code })
    })
    for (const [path, field] of [
      ['/with', 'run_at'],
      ['/without', '(body)'],
    ]) {
      const res = await app.request(path!)
      expect(res.status).toBe(400)
      expect(res.headers.get('content-type')).toBe('application/problem+json')
      const body = (await res.json()) as { errors: unknown }
      expect(body.errors).toEqual([{ field, message: expect.any(String) }])
    }
  })
})
