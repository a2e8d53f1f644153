/**
 * One smoke table of runtimes: the API and the scheduler of each entry (Node's CLI, deno.ts,
 * bun.ts, workerd.ts under `wrangler dev --local`) as real processes, on a database of their own
 * behind a proxy the test can take down.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { leaderReleaseAll, leaderTryAcquire } from '../../src/db/queries/leader.ts'
import { type BlackholeProxy, startBlackholeProxy } from '../failover-proxy.ts'
import { setup, TEST_SECRET, type TestBundle, waitFor } from '../helpers.ts'
import {
  IDP_AUDIENCE,
  IDP_ISSUER,
  type IdentityProvider,
  startIdentityProvider,
} from '../identity-provider.ts'
import { freePort, type Service } from '../processes.ts'
import { RUNTIMES, STARTUP_MS, startWrangler, wranglerConfigWithHyperdrive } from './runtimes.ts'

describe.each(RUNTIMES)('$name', (runtime) => {
  let t: TestBundle
  let proxy: BlackholeProxy
  let services: Service[] = []
  let base: string
  let headers: Record<string, string>
  const logs = () => services.map((s) => s.logs()).join('\n')
  const sessions = async (applicationName: string) => {
    const [row] = await t.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name LIKE ${applicationName}`
    return row!.n
  }
  const post = (body: unknown, signal?: AbortSignal) =>
    fetch(`${base}/v1/jobs`, { method: 'POST', headers, body: JSON.stringify(body), signal })

  beforeAll(
    async () => {
      t = await setup()
      proxy = await startBlackholeProxy(t.url)
      const port = await freePort()
      base = `http://127.0.0.1:${port}`
      services = await runtime.start({
        DATABASE_URL: proxy.url,
        PGSCHED_JWT_SECRET: TEST_SECRET,
        PGSCHED_HOST: '127.0.0.1',
        PORT: String(port),
      })
      const token = await t.token('alice', 'submitter')
      headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
    },
    2 * STARTUP_MS + 10_000,
  )

  afterAll(async () => {
    for (const s of services) await s.stop()
    await proxy.down()
    await t.close()
  })

  it('serves the API', async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200)
    expect((await fetch(`${base}/readyz`)).status).toBe(200)
    const bad = await post({ name: 'x', command: 'true', priority: 0 })
    expect(bad.status).toBe(400)
    expect(bad.headers.get('content-type')).toBe('application/problem+json')
    const res = await post({ name: 'smoke', command: 'true' })
    expect(res.status).toBe(201)
    const { job_id } = (await res.json()) as { job_id: number }
    const list = await fetch(`${base}/v1/jobs`, { headers })
    expect(list.status).toBe(200)
    const { items } = (await list.json()) as { items: { job_id: number }[] }
    expect(items.map((j) => j.job_id)).toContain(job_id)
    const spec = await fetch(`${base}/openapi.json`)
    expect(spec.status).toBe(200)
    expect(((await spec.json()) as { openapi: string }).openapi).toMatch(/^3\./)
  })

  it("fires cron ticks from this runtime's scheduler", async () => {
    const res = await post({ name: 'cron', command: 'true', schedule: '* * * * * *' })
    expect(res.status).toBe(201)
    const { job_id } = (await res.json()) as { job_id: number }
    // No worker runs here: queued runs are the scheduler's doing.
    await waitFor(
      async () => {
        const runs = await fetch(`${base}/v1/jobs/${job_id}/runs`, { headers })
        return ((await runs.json()) as { items: unknown[] }).items.length >= 2
      },
      10_000,
      () => `two ticks fired by the ${runtime.name} scheduler; output:\n${logs()}`,
    )
    const [leader] = await t.sql`SELECT holder FROM pgsched.leader`
    const holder = runtime.holder(services)
    if (typeof holder === 'string') expect(leader!.holder).toBe(holder)
    else expect(leader!.holder).toMatch(holder)
  })

  it('answers 503 within a second while the database is down, 201 once it is back', async () => {
    await proxy.down()
    const down = await post({ name: 'while-down', command: 'true' }, AbortSignal.timeout(1_000))
    expect(down.status).toBe(503)
    expect(down.headers.get('content-type')).toBe('application/problem+json')
    expect(((await down.json()) as { type: string }).type).toBe('urn:pgsched:problem:unavailable')
    await proxy.up()
    await waitFor(
      async () => (await post({ name: 'back', command: 'true' })).status === 201,
      15_000,
      () => `201 once the database is back; output:\n${logs()}`,
    )
  }, 30_000)

  it('stops on SIGTERM: server, scheduler and pool closed, with its exit code', async () => {
    for (const s of services) expect(await s.stop(), logs()).toBe(runtime.exitOnTerm ?? 0)
    // Its pools and the elector's session (which held the leader lock) are gone.
    await waitFor(
      async () => (await sessions('pgsched-%')) === 0,
      5_000,
      `the ${runtime.name} sessions to close`,
    )
  })
})

describe('workerd, one setting per test', () => {
  let t: TestBundle
  let idp: IdentityProvider
  let wrangler: Service | undefined

  beforeAll(async () => {
    t = await setup()
    // Slow keys: every request of the provider's test arrives while the first fetch is in flight.
    idp = await startIdentityProvider(500)
  })

  afterEach(async () => {
    await wrangler?.stop()
    wrangler = undefined
  })

  afterAll(async () => {
    await idp?.close()
    await t?.close()
  })

  it(
    "connects the API through the binding's connection string",
    async () => {
      const port = String(await freePort())
      // DATABASE_URL leads nowhere: only the binding (wrangler's local Hyperdrive) reaches Postgres.
      wrangler = await startWrangler(
        {
          DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
          PGSCHED_JWT_SECRET: TEST_SECRET,
          PORT: port,
        },
        ['--config', wranglerConfigWithHyperdrive()],
        { CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: t.url },
      )
      const base = `http://127.0.0.1:${port}`
      expect((await fetch(`${base}/readyz`)).status, wrangler.logs()).toBe(200)
      const token = await t.token('alice', 'submitter')
      const res = await fetch(`${base}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'through-hyperdrive', command: 'true' }),
      })
      expect(res.status, wrangler.logs()).toBe(201)
    },
    2 * STARTUP_MS,
  )

  it(
    "verifies tokens with the provider's keys, ten first requests at once",
    async () => {
      const port = String(await freePort())
      wrangler = await startWrangler({
        DATABASE_URL: t.url,
        PGSCHED_JWKS_URL: idp.jwksUrl,
        PGSCHED_JWT_ISSUER: IDP_ISSUER,
        PGSCHED_JWT_AUDIENCE: IDP_AUDIENCE,
        PORT: port,
      })
      const tokens = await Promise.all(
        Array.from({ length: 10 }, (_, i) => idp.sign({ sub: `user${i}` })),
      )
      const statuses = await Promise.all(
        tokens.map(async (token) => {
          const res = await fetch(`http://127.0.0.1:${port}/v1/jobs`, {
            headers: { authorization: `Bearer ${token}` },
            signal: AbortSignal.timeout(10_000),
          })
          return res.status
        }),
      )
      expect(statuses, wrangler.logs()).toEqual(tokens.map(() => 200))
      expect(idp.fetches()).toBeGreaterThan(0)
    },
    2 * STARTUP_MS,
  )

  it(
    'fires due ticks itself while another process leads and fires none',
    async () => {
      // The test's own session holds the leader lock, as a leader that has stopped ticking would.
      const lock = await t.sql.reserve()
      try {
        expect(await leaderTryAcquire(lock)).toBe(true)
        const port = String(await freePort())
        wrangler = await startWrangler(
          { DATABASE_URL: t.url, PGSCHED_JWT_SECRET: TEST_SECRET, PORT: port },
          ['--test-scheduled'],
        )
        const token = await t.token('alice', 'submitter')
        const res = await t.request('POST', '/v1/jobs', {
          token,
          body: { name: 'minutely', command: 'true', schedule: '* * * * * *' },
        })
        expect(res.status).toBe(201)
        const runs = async () => {
          const [row] = await t.sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pgsched.runs WHERE job_id = ${res.body.job_id}`
          return row!.n
        }
        // That nothing fires needs a window: the first tick is due within a second of the
        // submission, and no scheduler may fire it while the test holds the lock.
        await new Promise((r) => setTimeout(r, 1_500))
        expect(await runs()).toBe(0)
        const tick = await fetch(`http://127.0.0.1:${port}/__scheduled?cron=*+*+*+*+*`)
        expect(tick.status, wrangler.logs()).toBe(200)
        expect(await runs(), wrangler.logs()).toBeGreaterThanOrEqual(1)
      } finally {
        await leaderReleaseAll(lock)
        lock.release()
      }
    },
    2 * STARTUP_MS,
  )
})
