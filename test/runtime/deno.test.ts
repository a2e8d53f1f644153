/** The portable layers on Deno: the API and the scheduler of src/runtime/deno.ts, unchanged. */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { setup, TEST_SECRET, type TestBundle, waitFor } from '../helpers.ts'
import { freePort, type Service, startService } from '../processes.ts'

let t: TestBundle
let deno: Service
let base: string

beforeAll(async () => {
  t = await setup()
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  deno = await startService(
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
      DATABASE_URL: t.url,
      PGSCHED_JWT_SECRET: TEST_SECRET,
      PORT: String(port),
      DENO_NO_UPDATE_CHECK: '1',
    },
    'listening',
    40_000,
  )
}, 60_000)

afterAll(async () => {
  await deno.stop()
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
    () => `two ticks fired by the Deno scheduler; output:\n${deno.logs()}`,
  )
  const [leader] = await t.sql`SELECT holder FROM pgsched.leader`
  expect(leader!.holder).toBe('deno')
})
