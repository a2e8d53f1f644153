/** The README's curl session, run word for word against `pgsched start` as a real process. */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { setup, TEST_SECRET, type TestBundle, waitFor } from './helpers.ts'
import { freePort, type Service, startPgsched } from './processes.ts'

let t: TestBundle
let server: Service
let port: number

beforeAll(async () => {
  t = await setup()
  port = await freePort()
  server = await startPgsched('start', {
    DATABASE_URL: t.url,
    PGSCHED_JWT_SECRET: TEST_SECRET,
    PORT: String(port),
  })
})

afterAll(async () => {
  await server.stop()
  await t.close()
})

it("runs the README's curl session as printed", async () => {
  const readme = readFileSync('README.md', 'utf8')
  const session =
    /Run the `export TOKEN=…` line in another shell, then:\n\n```sh\n([\s\S]*?)```/.exec(
      readme,
    )?.[1]
  expect(session, 'the curl session block in README.md').toBeDefined()
  const script = session!.replaceAll('http://localhost:8080', `http://localhost:${port}`)
  const token = await t.token('admin', 'admin')
  const { stdout } = await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], {
    env: { ...process.env, TOKEN: token },
  })
  expect(stdout).toContain('"name":"hello"')
  expect(stdout).toContain('"schedule":"*/10 * * * * *"')
  const run = JSON.parse(stdout.trim().split('\n').at(-1)!)
  expect(run.attempts).toBeInstanceOf(Array)
  await waitFor(
    async () =>
      (await t.request('GET', `/v1/runs/${run.run_id}`, { token })).body.output ===
      'hello from pgsched\n',
    10_000,
    'the hello run to succeed',
  )
})

it('shuts down on SIGTERM with exit code 0', async () => {
  expect(await server.stop()).toBe(0)
})
