/** The API's circuit breaker: with the database unreachable, requests fail fast with 503. */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { createApp } from '../src/api/app.ts'
import { createTokenVerifier, mintToken } from '../src/api/tokens.ts'
import type { Logger } from '../src/core/types.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { TEST_SECRET } from './helpers.ts'
import { freePort } from './processes.ts'

let sql: SqlPool
let app: ReturnType<typeof createApp>
const warnings: string[] = []

beforeAll(async () => {
  // A port nothing listens on: every connection attempt is refused.
  sql = createSql(`postgres://pgsched@127.0.0.1:${await freePort()}/none`, { max: 2 })
  const logger: Logger = {
    debug() {},
    info() {},
    warn: (o, msg) => void warnings.push(String(msg ?? o)),
    error() {},
  }
  app = createApp({ sql, verifyToken: createTokenVerifier({ secret: TEST_SECRET }), logger })
})
afterAll(() => sql.end())

it('answers 503 problem+json while the database is unreachable, then fails fast from the open circuit', async () => {
  const token = await mintToken(TEST_SECRET, 'ops', ['admin'], 600)
  const get = async () => {
    const started = performance.now()
    const res = await app.request('/v1/jobs', { headers: { authorization: `Bearer ${token}` } })
    return {
      status: res.status,
      type: res.headers.get('content-type'),
      retryAfter: res.headers.get('retry-after'),
      body: await res.json(),
      ms: performance.now() - started,
    }
  }
  // The first failures reach the pool and are counted: Retry-After 5 from the error handler.
  for (let i = 0; i < 3; i++) {
    expect(await get()).toMatchObject({
      status: 503,
      type: 'application/problem+json',
      retryAfter: '5',
      body: { type: 'urn:pgsched:problem:unavailable', status: 503 },
    })
  }
  expect(warnings).toContain('api: database unreachable; answering 503 until it is back')
  // Then the circuit is open: an answer without touching the pool, Retry-After its half-open delay.
  const open = await get()
  expect(open).toMatchObject({ status: 503, retryAfter: '2', body: { status: 503 } })
  expect(open.ms).toBeLessThan(50)
  // Health needs no token and is outside the breaker.
  expect((await app.request('/healthz')).status).toBe(200)
})
