/** The portable layers on Deno: the API and the scheduler of src/runtime/deno.ts, unchanged. */
import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { setup, TEST_SECRET, type TestBundle, waitFor } from '../helpers.ts'

let t: TestBundle
let deno: ChildProcess
let base: string
let logs = ''

beforeAll(async () => {
  t = await setup()
  const port = await new Promise<number>((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
  base = `http://127.0.0.1:${port}`
  deno = spawn(
    'node_modules/.bin/deno',
    [
      'run',
      '--allow-net',
      '--allow-env',
      '--allow-read',
      '--node-modules-dir=manual',
      'src/runtime/deno.ts',
    ],
    {
      env: {
        ...process.env,
        DATABASE_URL: t.url,
        PGSCHED_JWT_SECRET: TEST_SECRET,
        PORT: String(port),
        DENO_NO_UPDATE_CHECK: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  deno.stdout!.on('data', (d) => (logs += d))
  deno.stderr!.on('data', (d) => (logs += d))
  await waitFor(
    () => logs.includes('listening'),
    40_000,
    () => `Deno to serve; output:\n${logs}`,
  )
}, 60_000)

afterAll(async () => {
  if (deno.exitCode === null) {
    const exited = new Promise((r) => deno.once('exit', r))
    deno.kill('SIGTERM')
    await exited
  }
  await t.close()
})

it('serves the API and fires cron ticks on Deno', async () => {
  const token = await t.token('alice', 'submitter')
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
  expect((await fetch(`${base}/readyz`)).status).toBe(200)
  const bad = await fetch(`${base}/v1/jobs`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ name: 'x', command: 'true', priority: 0 }),
  })
  expect(bad.status).toBe(400)
  expect(bad.headers.get('content-type')).toBe('application/problem+json')
  const res = await fetch(`${base}/v1/jobs`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ name: 'deno-cron', command: 'true', schedule: '* * * * * *' }),
  })
  expect(res.status).toBe(201)
  const job = (await res.json()) as { job_id: number }
  // No worker runs here: the Deno scheduler creating queued runs is the proof.
  await waitFor(
    async () => {
      const runs = (await (
        await fetch(`${base}/v1/jobs/${job.job_id}/runs`, { headers })
      ).json()) as { items: unknown[] }
      return runs.items.length >= 2
    },
    10_000,
    () => `two ticks fired by the Deno scheduler; output:\n${logs}`,
  )
  const [leader] = await t.sql`SELECT holder FROM pgsched.leader`
  expect(leader!.holder).toBe('deno')
})
