/**
 * The API reaching its database through a path that goes silent (a partition between the API and
 * HAProxy or the primary): submissions get a 503 problem+json rather than hanging, and the API
 * accepts them again by itself once the path is back.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { createApp } from '../src/api/app.ts'
import { createTokenVerifier, mintToken } from '../src/api/tokens.ts'
import { silentLogger } from '../src/core/types.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { type BlackholeProxy, startBlackholeProxy } from './failover-proxy.ts'
import { setup, TEST_SECRET, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
let proxy: BlackholeProxy
let sql: SqlPool
let app: ReturnType<typeof createApp>
let token: string

beforeAll(async () => {
  t = await setup()
  proxy = await startBlackholeProxy(t.url)
  sql = createSql(proxy.url, { max: 4 })
  app = createApp({
    sql,
    verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
    logger: silentLogger,
  })
  token = await mintToken(TEST_SECRET, 'alice', ['submitter'], 3600)
})
afterAll(async () => {
  proxy.heal()
  await sql.end({ timeout: 1 })
  await proxy.close()
  await t.close()
})

async function submit(name: string) {
  const res = await app.request('/v1/jobs', {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, command: 'true' }),
  })
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies by their documented shape
    body: (await res.json()) as any,
  }
}

it('answers 503 while the path to the database is silent, and 201 again once it is back', async () => {
  expect((await submit('before')).status).toBe(201)
  proxy.blackhole()
  // Without a bound this would hang until TCP gave up (the test's time limit). The write's
  // outcome is unknown to the API: a 503 that says so, never a 500 or a 201.
  const cut = await submit('while-cut')
  expect(cut).toMatchObject({
    status: 503,
    type: 'application/problem+json',
    body: {
      type: 'urn:pgsched:problem:unavailable',
      // Cut off by the API's request timeout while its write was on the way: it may commit yet.
      detail: expect.stringMatching(
        /did not answer within 4 s: the write may or may not have been written\. Retry with the same Idempotency-Key/,
      ),
    },
  })
  proxy.heal()
  const back = await waitFor(
    async () => {
      const a = await submit('after')
      return a.status === 201 && a
    },
    20_000,
    'a submission accepted again',
  )
  const [row] = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pgsched.jobs WHERE id = ${back.body.job_id}`
  expect(row!.n).toBe(1)
}, 40_000)
