/**
 * The API with a pool per request (AppDeps.sql a PerRequestSql, as on workerd): every request
 * opens its own pool and ends it after its response, whatever the answer; nothing (a group
 * commit, a connection) is shared between requests; the app's memory (the breaker) is.
 */
import { createServer, type Server, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createApp, type PerRequestSql } from '../src/api/app.ts'
import { createTokenVerifier } from '../src/api/tokens.ts'
import { silentLogger } from '../src/core/types.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { requester, setup, TEST_SECRET, type TestBundle, waitFor } from './helpers.ts'

const APPLICATION_NAME = 'pgsched-per-request-test'

/** A PerRequestSql on `url` that keeps, for each pool it opens, its statements and whether it was ended. */
function countingPools(url: string) {
  const pools: { sql: SqlPool; statements: string[]; ended: boolean }[] = []
  const source: PerRequestSql = {
    perRequest() {
      const sql = createSql(url, { applicationName: APPLICATION_NAME })
      const pool = { sql, statements: [] as string[], ended: false }
      // On the pool itself, not a wrapper: the app keys its group commits by the pool. postgres.js
      // hands every statement a connection sends to options.debug.
      sql.options.debug = (_connection, statement) => void pool.statements.push(statement)
      const { end } = sql
      sql.end = (o) => {
        pool.ended = true
        return end(o)
      }
      pools.push(pool)
      return sql
    },
  }
  return { source, pools }
}

function appOn(source: SqlPool | PerRequestSql) {
  return createApp({
    sql: source,
    verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
    logger: silentLogger,
    rateLimitPerMinute: 1000,
  })
}

let t: TestBundle
let alice: string

beforeAll(async () => {
  t = await setup()
  alice = await t.token('alice', 'submitter')
})
afterAll(() => t.close())

/** Connections of the per-request pools still open (their backends gone once the pools ended). */
async function openConnections(): Promise<number> {
  const [row] = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ${APPLICATION_NAME}`
  return row!.n
}

describe('a pool per request', () => {
  it('serves health, submissions, listings and errors, each request on a pool of its own that is ended after', async () => {
    const { source, pools } = countingPools(t.url)
    const request = requester(appOn(source))
    const ask = async (...args: Parameters<typeof request>) => {
      const before = pools.length
      const res = await request(...args)
      // One pool for this request, ended by the time its response is out.
      expect(pools.length).toBe(before + 1)
      expect(pools.at(-1)!.ended).toBe(true)
      return res
    }
    expect((await ask('GET', '/healthz')).status).toBe(200)
    expect((await ask('GET', '/readyz')).body).toMatchObject({ status: 'ready' })
    const created = await ask('POST', '/v1/jobs', {
      token: alice,
      body: { name: 'per-request', command: 'true' },
    })
    expect(created.status).toBe(201)
    const bad = await ask('POST', '/v1/jobs', { token: alice, body: { name: 'no command' } })
    expect(bad.status).toBe(400)
    expect(bad.headers.get('content-type')).toBe('application/problem+json')
    const listed = await ask('GET', '/v1/jobs', { token: alice })
    expect(listed.status).toBe(200)
    expect(listed.body.items.map((j: { job_id: number }) => j.job_id)).toContain(
      created.body.job_id,
    )
    const batch = await ask('POST', '/v1/jobs/batch', {
      token: alice,
      body: {
        jobs: [
          { name: 'b1', command: 'true' },
          { name: 'b2', command: 'true' },
        ],
      },
    })
    expect(batch.status).toBe(201)
    // Errors thrown by a handler after it queried (onError answers): 404, then 409 in a transaction.
    expect((await ask('GET', '/v1/jobs/987654321', { token: alice })).status).toBe(404)
    const id = created.body.job_id
    expect((await ask('DELETE', `/v1/jobs/${id}`, { token: alice })).status).toBe(200)
    const conflict = await ask('PATCH', `/v1/jobs/${id}`, { token: alice, body: { priority: 1 } })
    expect(conflict.status).toBe(409)
    await waitFor(async () => (await openConnections()) === 0, 10_000, 'no connection left open')
  })

  it('keeps concurrent submissions apart: a pool each, running only the statements of its own request, nothing left open', async () => {
    const { source, pools } = countingPools(t.url)
    const request = requester(appOn(source))
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        request('POST', '/v1/jobs', {
          token: alice,
          body: { name: `burst-${i}`, command: 'true' },
        }),
      ),
    )
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(201))
    expect(new Set(pools.map((p) => p.sql)).size).toBe(20)
    // A group commit shared between requests (the rate limit's, the submissions') would write
    // several requests' calls on one pool and none on the others.
    const ran = (p: (typeof pools)[number], what: string) =>
      p.statements.filter((s) => s.includes(what)).length
    expect(pools.map((p) => ran(p, 'take_submission_tokens'))).toEqual(Array(20).fill(1))
    expect(pools.map((p) => ran(p, 'pgsched.submit_job('))).toEqual(Array(20).fill(1))
    expect(pools.every((p) => p.ended)).toBe(true)
    await waitFor(async () => (await openConnections()) === 0, 10_000, 'no connection left open')
  })
})

describe('the breaker, across per-request pools', () => {
  let server: Server
  let attempts = 0
  let url: string
  let startingUp: Buffer
  // While set, connections are held unanswered (a database that hangs) instead.
  let hold: Socket[] | undefined
  const sockets = new Set<Socket>()

  beforeAll(async () => {
    // A server still starting up: it answers every connection with PostgreSQL's 57P03 ("the
    // database system is starting up") and closes it, counting the attempts.
    const fields = ['SFATAL', 'VFATAL', 'C57P03', 'Mthe database system is starting up']
    const body = Buffer.from(`${fields.join('\0')}\0\0`)
    const length = Buffer.alloc(4)
    length.writeInt32BE(body.length + 4)
    startingUp = Buffer.concat([Buffer.from('E'), length, body])
    server = createServer((socket) => {
      attempts++
      sockets.add(socket)
      if (hold) hold.push(socket)
      else socket.once('data', () => socket.end(startingUp))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `postgres://x@127.0.0.1:${(server.address() as { port: number }).port}/x`
  })
  afterAll(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  it('opens after failures on several requests, then refuses the next without trying to connect', async () => {
    const { source, pools } = countingPools(url)
    const request = requester(appOn(source))
    const admin = await t.token('ops', 'admin')
    const get = () => request('GET', '/v1/jobs', { token: admin })
    // Three requests in a row fail to reach the database: each through its own pool.
    for (let i = 0; i < 3; i++) {
      const res = await get()
      expect(res).toMatchObject({ status: 503, body: { type: 'urn:pgsched:problem:unavailable' } })
      expect(res.headers.get('content-type')).toBe('application/problem+json')
      expect(res.headers.get('retry-after')).toBe('5')
    }
    expect(attempts).toBeGreaterThanOrEqual(3)
    const tried = attempts
    // The breaker learned it from those requests: the next is refused at once, Retry-After its
    // half-open delay, and no connection is attempted.
    const refused = await get()
    expect(refused).toMatchObject({ status: 503, body: { status: 503 } })
    expect(refused.headers.get('retry-after')).toBe('2')
    expect(attempts).toBe(tried)
    expect(pools).toHaveLength(4)
    expect(pools.every((p) => p.ended)).toBe(true)
  })

  // Held on the probe, a request waited for the probe's whole timeout (4 s) and then some: a 503
  // after 6.3 s in the chaos drill of a Postgres restart. On workerd, with a pool per request,
  // it would also wait on a promise another request's I/O settles.
  it.each(['a pool per request', 'the shared pool'])(
    'refuses a request that comes while the half-open probe is in flight, rather than hold it on the probe (%s)',
    async (mode) => {
      const shared = mode === 'the shared pool' ? createSql(url, { max: 4 }) : undefined
      const request = requester(appOn(shared ?? countingPools(url).source))
      const admin = await t.token('ops', 'admin')
      const get = () => request('GET', '/v1/jobs', { token: admin })
      for (let i = 0; i < 3; i++) expect((await get()).status).toBe(503)
      expect((await get()).headers.get('retry-after')).toBe('2')
      // Past the breaker's half-open delay (2 s), the next request probes: it hangs on its connection.
      await new Promise((resolve) => setTimeout(resolve, 2100))
      hold = []
      const held = hold
      let probeSettled = false
      const probe = get().finally(() => {
        probeSettled = true
      })
      await waitFor(() => held.length > 0, 10_000, 'the probe to connect')
      // Another request now is answered at once, without waiting on the probe.
      const other = await get()
      expect(probeSettled).toBe(false)
      expect(other).toMatchObject({ status: 503, body: { status: 503 } })
      hold = undefined
      for (const socket of held) socket.end(startingUp)
      expect((await probe).status).toBe(503)
      await shared?.end()
    },
  )
})
