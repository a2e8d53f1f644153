/**
 * One smoke table of runtimes: the API and the scheduler of each entry (Node's CLI, deno.ts,
 * bun.ts) as real processes, on a database of their own behind a proxy the test can take down.
 */
import { hostname } from 'node:os'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { type BlackholeProxy, startBlackholeProxy } from '../failover-proxy.ts'
import { setup, TEST_SECRET, type TestBundle, waitFor } from '../helpers.ts'
import { freePort, NODE, type Service, startService } from '../processes.ts'

/** How each runtime starts the API and the scheduler, and who it leads as. */
interface Runtime {
  name: string
  start(env: Record<string, string>): Promise<Service[]>
  holder(services: Service[]): string
}

const STARTUP_MS = 40_000

const RUNTIMES: Runtime[] = [
  {
    name: 'Node',
    // The CLI's api and scheduler commands (`start` would add a worker, which needs a sandbox).
    start: async (env) => [
      await startService(NODE, ['src/runtime/node.ts', 'api'], env, 'API listening', STARTUP_MS),
      await startService(
        NODE,
        ['src/runtime/node.ts', 'scheduler'],
        env,
        'scheduler started',
        STARTUP_MS,
      ),
    ],
    holder: (services) => `${hostname()}:${services[1]!.child.pid}`,
  },
  {
    name: 'Deno',
    start: async (env) => [
      await startService(
        'node_modules/.bin/deno',
        [
          'run',
          '--allow-net',
          '--allow-env',
          '--allow-read',
          '--allow-sys=hostname',
          '--node-modules-dir=manual',
          'src/runtime/deno.ts',
        ],
        { ...env, DENO_NO_UPDATE_CHECK: '1' },
        'listening',
        STARTUP_MS,
      ),
    ],
    holder: (services) => `deno:${hostname()}:${services[0]!.child.pid}`,
  },
  {
    name: 'Bun',
    start: async (env) => [
      await startService(
        'node_modules/.bin/bun',
        ['src/runtime/bun.ts'],
        env,
        'listening',
        STARTUP_MS,
      ),
    ],
    holder: (services) => `bun:${hostname()}:${services[0]!.child.pid}`,
  },
]

describe.each(RUNTIMES)('$name', (runtime) => {
  let t: TestBundle
  let proxy: BlackholeProxy
  let services: Service[] = []
  let base: string
  let headers: Record<string, string>
  const logs = () => services.map((s) => s.logs()).join('\n')
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
    expect(leader!.holder).toBe(runtime.holder(services))
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

  it('stops on SIGTERM: server, scheduler and pool closed, exit code 0', async () => {
    for (const s of services) expect(await s.stop(), logs()).toBe(0)
    // Its pools and the elector's session (which held the leader lock) are gone.
    await waitFor(
      async () => {
        const [row] = await t.sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'pgsched-%'`
        return row!.n === 0
      },
      5_000,
      `the ${runtime.name} sessions to close`,
    )
  })
})
