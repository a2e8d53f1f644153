/**
 * Database loss: a PostgreSQL server of this file's own is stopped and started again while
 * `pgsched api`, `scheduler` and `worker` run as children with runs queued and running.
 */
import { randomInt } from 'node:crypto'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { mintToken } from '../src/api/tokens.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { migrateAll } from '../src/runtime/bootstrap.ts'
import { type EmbeddedServer, startEmbeddedPostgres } from '../src/runtime/embedded-postgres.ts'
import { mentioning } from '../src/worker/sandbox/test-support.ts'
import { TEST_SECRET, waitFor } from './helpers.ts'
import { freePort, type Service, startPgsched } from './processes.ts'

const dir = mkdtempSync(`${tmpdir()}/pgsched-restart-`)
let port: number
let server: EmbeddedServer
let sql: SqlPool
let api: string
let token: string
const services: Service[] = []

const startServer = () => startEmbeddedPostgres({ dataDir: dir, port })

beforeAll(async () => {
  chmodSync(dir, 0o711)
  port = await freePort()
  server = await startServer()
  await migrateAll(server.url)
  sql = createSql(server.url, { max: 2 })
  const apiPort = await freePort()
  api = `http://127.0.0.1:${apiPort}`
  token = await mintToken(TEST_SECRET, 'ops', ['admin'], 3600)
  const env = {
    DATABASE_URL: server.url,
    PGSCHED_JWT_SECRET: TEST_SECRET,
    PORT: String(apiPort),
    PGSCHED_LEADER_POLL_SECONDS: '1',
    PGSCHED_HEARTBEAT_INTERVAL_SECONDS: '1',
    PGSCHED_HEARTBEAT_TIMEOUT_SECONDS: '3',
    PGSCHED_WORKER_CONCURRENCY: '4',
  }
  services.push(
    ...(await Promise.all([
      startPgsched('api', env),
      startPgsched('scheduler', env),
      startPgsched('worker', env),
    ])),
  )
}, 60_000)

afterAll(async () => {
  if (process.env.DEBUG_LOGS) for (const s of services) console.log(s.logs().slice(-6000))
  await Promise.all(services.map((s) => s.stop()))
  await sql.end()
  await server.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function call(method: string, path: string, body?: unknown) {
  const started = Date.now()
  const res = await fetch(`${api}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    retryAfter: res.headers.get('retry-after'),
    // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies by their documented shape
    body: (await res.json()) as any,
    ms: Date.now() - started,
  }
}

it('survives a database restart under load: 503s while down, every acknowledged job completes', async () => {
  const acknowledged: number[] = []
  // About a second (GNU sleep takes fractions), and a command line no other process has.
  const seconds = `1.0${randomInt(1e8, 1e9)}`
  for (let i = 0; i < 12; i++) {
    const r = await call('POST', '/v1/jobs', {
      name: `load-${i}`,
      command: `sleep ${seconds}; echo ok-${i}`,
    })
    expect(r.status).toBe(201)
    acknowledged.push(r.body.job_id)
  }
  await waitFor(
    async () => (await sql`SELECT 1 FROM pgsched.runs WHERE status = 'running'`).length > 0,
    10_000,
    'runs to be running',
  )

  await server.stop()
  // While it is down: fast 503 problem+json, never a hang, and nothing acknowledged.
  for (let i = 0; i < 6; i++) {
    const r = await call('POST', '/v1/jobs', { name: `while-down-${i}`, command: 'true' })
    expect(r).toMatchObject({ status: 503, type: 'application/problem+json' })
    expect(r.body.type).toBe('urn:pgsched:problem:unavailable')
    expect(Number(r.retryAfter)).toBeGreaterThan(0)
    expect(r.ms).toBeLessThan(1000)
  }
  // The running commands finish with nowhere to write their results. (A run whose start
  // committed just before the stop spawns its command within milliseconds, well before the
  // server has finished stopping and refused the calls above.)
  await waitFor(() => mentioning(seconds).length === 0, 10_000, 'the running commands to finish')
  server = await startServer()

  const after = await waitFor(
    async () => {
      const r = await call('POST', '/v1/jobs', { name: 'after', command: 'echo after' })
      return r.status === 201 && r
    },
    15_000,
    'the API to accept submissions again',
  )
  acknowledged.push(after.body.job_id)
  const runs = await waitFor(
    async () => {
      const rows = await sql<{ job_id: number; status: string; output: string }[]>`
        SELECT job_id, status, output FROM pgsched.runs WHERE job_id IN ${sql(acknowledged)}`
      return (
        rows.length === acknowledged.length && rows.every((r) => r.status === 'succeeded') && rows
      )
    },
    45_000,
    'every acknowledged job to succeed',
  )
  expect(runs.map((r) => r.output).sort()).toEqual(
    [...Array.from({ length: 12 }, (_, i) => `ok-${i}\n`), 'after\n'].sort(),
  )
  expect((await sql`SELECT 1 FROM pgsched.jobs WHERE name LIKE 'while-down-%'`).length).toBe(0)
  // The restart was not mistaken for dead workers: nothing was rescued, every process is alive.
  const lost = await sql`SELECT run_id FROM pgsched.run_attempts WHERE outcome <> 'succeeded'`
  expect(lost).toEqual([])
  const workers = await call('GET', '/v1/workers')
  expect(workers.body.items.map((w: { state: string }) => w.state)).toEqual(['active'])
  for (const s of services) expect(s.child.exitCode, s.logs().slice(-3000)).toBeNull()
}, 90_000)
