/** The README's curl session, run word for word against `pgsched start` as a real process. */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { promisify } from 'node:util'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { setup, TEST_SECRET, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
let server: ChildProcess
let port: number
let logs = ''

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

beforeAll(async () => {
  t = await setup()
  port = await freePort()
  // The pinned Node 24 (type stripping), even when vitest itself was started by an older node.
  const node = existsSync('node_modules/.bin/node') ? 'node_modules/.bin/node' : process.execPath
  server = spawn(node, ['src/runtime/node.ts', 'start'], {
    env: {
      ...process.env,
      DATABASE_URL: t.url,
      PGSCHED_JWT_SECRET: TEST_SECRET,
      PORT: String(port),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  server.stdout!.on('data', (d) => (logs += d))
  server.stderr!.on('data', (d) => (logs += d))
  await waitFor(
    () => logs.includes('pgsched API listening'),
    20_000,
    () => `the server to listen; logs:\n${logs}`,
  )
})

afterAll(async () => {
  if (server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r))
    server.kill('SIGTERM')
    await exited
  }
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

it('shuts down on SIGTERM', async () => {
  const exited = new Promise<number | null>((r) => server.once('exit', (code) => r(code)))
  server.kill('SIGTERM')
  expect(await exited).toBe(0)
})
