/**
 * /readyz while the database is away: 503 at once when it refuses connections, 503 within
 * READY_TIMEOUT_MS when its connections hang (a partition), and 200 again once it is back.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { createApp } from '../src/api/app.ts'
import { createTokenVerifier } from '../src/api/tokens.ts'
import { silentLogger } from '../src/core/types.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { type BlackholeProxy, startBlackholeProxy } from './failover-proxy.ts'
import { setup, TEST_SECRET, type TestBundle } from './helpers.ts'
import { freePort } from './processes.ts'

let t: TestBundle
let proxy: BlackholeProxy
let sql: SqlPool
let app: ReturnType<typeof createApp>

beforeAll(async () => {
  t = await setup()
  proxy = await startBlackholeProxy(t.url)
  sql = createSql(proxy.url, { max: 2 })
  app = createApp({
    sql,
    verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
    logger: silentLogger,
  })
})
afterAll(async () => {
  proxy.heal()
  await sql.end({ timeout: 1 })
  await proxy.close()
  await t.close()
})

async function readyz() {
  const res = await app.request('/readyz')
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies by their documented shape
  return { status: res.status, body: (await res.json()) as any }
}

it('is 503 while the database is cut off (connections hang), and 200 once it is back', async () => {
  expect(await readyz()).toMatchObject({ status: 200, body: { status: 'ready' } })
  proxy.blackhole()
  // Without a bound, this request would hang until TCP gave up (the test's own time limit).
  expect(await readyz()).toMatchObject({
    status: 503,
    body: { status: 'unready', reason: 'database unreachable' },
  })
  proxy.heal()
  expect(await readyz()).toMatchObject({ status: 200, body: { status: 'ready' } })
}, 15_000)

it('is 503 when nothing listens at the database address', async () => {
  const away = createSql(`postgres://pgsched@127.0.0.1:${await freePort()}/none`, { max: 1 })
  try {
    const down = createApp({
      sql: away,
      verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
      logger: silentLogger,
    })
    const res = await down.request('/readyz')
    expect(res.status).toBe(503)
  } finally {
    await away.end()
  }
})
