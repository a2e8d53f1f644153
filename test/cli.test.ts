/**
 * The CLI as a user meets it, run as a real process (`node src/runtime/node.ts …`): help and
 * usage errors, `token` and its secret, `sql-url`, and `start` with the embedded database
 * (address, first-start token, private data folder, clear failures).
 */
import {
  chmodSync,
  chownSync,
  existsSync,
  type FSWatcher,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
} from 'node:fs'
import { networkInterfaces, tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { createTokenVerifier } from '../src/api/tokens.ts'
import { createSql } from '../src/db/client.ts'
import { freePort, runCli, type Service, startCli } from './processes.ts'

const SECRET = 'a-test-secret-of-at-least-32-characters'
const folders: string[] = []
const services: Service[] = []

/** A new empty folder, deleted after the file. */
function folder(prefix = 'pgsched-cli-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  folders.push(dir)
  return dir
}

/** `pgsched start` with the embedded database in `dataDir`; its API URL from what it printed. */
async function startDev(dataDir: string, env: Record<string, string> = {}) {
  const service = await startCli(['start'], {
    // An empty folder: no tasks/ or .pgsched/ of the repository's.
    cwd: folder(),
    env: {
      PGSCHED_DATA_DIR: dataDir,
      PORT: '0',
      PGSCHED_EMBEDDED_PG_PORT: String(await freePort()),
      PGSCHED_LOG_LEVEL: 'warn',
      ...env,
    },
  })
  services.push(service)
  const api = /API listening on (http:\/\/[^\s]+)/.exec(service.logs())?.[1]
  if (!api) throw new Error(`no address in:\n${service.logs()}`)
  return { ...service, api }
}

afterAll(async () => {
  await Promise.all(services.map((s) => s.stop()))
  for (const dir of folders) rmSync(dir, { recursive: true, force: true })
})

describe('help and usage', () => {
  it('--help, -h and help print the usage and exit 0', async () => {
    for (const arg of ['--help', '-h', 'help']) {
      const r = await runCli([arg])
      expect(r.code, arg).toBe(0)
      expect(r.stdout).toMatch(/^usage: pgsched <command>/)
      expect(r.stdout).toContain('sql-url')
    }
  })

  it("each command's --help prints its own help and runs nothing", async () => {
    const dataDir = join(folder(), 'data')
    // Nothing may start: a data folder that would be created, a database that is not there.
    const env = { PGSCHED_DATA_DIR: dataDir, PGSCHED_EMBEDDED_PG_PORT: '1' }
    const commands = ['start', 'api', 'scheduler', 'worker', 'migrate', 'token', 'sql-url']
    for (const [command, flag] of [...commands.map((c) => [c, '--help']), ['sql-url', '-h']]) {
      const r = await runCli([command!, flag!], { env, timeoutMs: 15_000 })
      expect(r.code, `${command} ${flag}: ${r.stderr}`).toBe(0)
      expect(r.stdout).toMatch(new RegExp(`^usage: pgsched ${command}\\b`))
    }
    const migrate = await runCli(['migrate', '--help'], {
      env: { DATABASE_URL: 'postgres://nobody:x@127.0.0.1:1/none' },
      timeoutMs: 10_000,
    })
    expect(migrate.code).toBe(0)
    expect((await runCli(['help', 'token'])).stdout).toMatch(/^usage: pgsched token --sub/)
    expect(existsSync(dataDir)).toBe(false)
  }, 90_000)

  it('an unknown command, or none, prints the usage on stderr and exits 2', async () => {
    const unknown = await runCli(['strat'])
    expect(unknown.code).toBe(2)
    expect(unknown.stdout).toBe('')
    expect(unknown.stderr).toMatch(/^usage: pgsched/)
    expect(unknown.stderr).toContain("unknown command 'strat'")
    const none = await runCli([])
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/^usage: pgsched/)
    const extra = await runCli(['migrate', 'now'])
    expect(extra.code).toBe(2)
    expect(extra.stderr).toContain("migrate takes no arguments, got 'now'")
  })
})

describe('token', () => {
  it('says what is wrong with its options', async () => {
    const env = { PGSCHED_JWT_SECRET: SECRET }
    const ttl = await runCli(['token', '--sub', 'a', '--role', 'admin', '--ttl', 'abc'], { env })
    expect(ttl.code).toBe(2)
    expect(ttl.stderr).toContain('--ttl must be a positive whole number of seconds')
    expect(ttl.stderr).toContain("got 'abc'")
    expect(ttl.stdout).toBe('')
    const zero = await runCli(['token', '--sub', 'a', '--role', 'admin', '--ttl', '0'], { env })
    expect(zero.code).toBe(2)
    expect(zero.stderr).toContain('--ttl must be a positive whole number of seconds')
    expect(zero.stderr).toContain("got '0'")
    expect(zero.stdout).toBe('')
    const role = await runCli(['token', '--sub', 'a', '--role', 'boss'], { env })
    expect(role.code).toBe(2)
    expect(role.stderr).toContain("unknown role 'boss'")
    const option = await runCli(['token', '--sub', 'a', '--role', 'admin', '--rol', 'x'], { env })
    expect(option.code).toBe(2)
    expect(option.stderr).toContain("'--rol'")
    for (const r of [ttl, role, option]) expect(r.stderr).not.toContain('undefined')
  })

  it('refuses to make up a secret where there is none', async () => {
    const elsewhere = folder()
    chmodSync(elsewhere, 0o755)
    const r = await runCli(['token', '--sub', 'admin', '--role', 'admin'], { cwd: elsewhere })
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain(`${elsewhere}/.pgsched/jwt-secret does not exist`)
    expect(r.stderr).toMatch(/PGSCHED_JWT_SECRET/)
    expect(r.stderr).toMatch(/PGSCHED_DATA_DIR/)
    expect(readdirSync(elsewhere)).toEqual([])
  })

  it('signs with the secret of the data folder, or PGSCHED_JWT_SECRET, and says which', async () => {
    const dataDir = folder()
    const stored = 'the-secret-kept-in-the-data-folder-0123456789'
    writeFileSync(join(dataDir, 'jwt-secret'), stored, { mode: 0o600 })
    const fromFolder = await runCli(['token', '--sub', 'alice', '--role', 'viewer'], {
      env: { PGSCHED_DATA_DIR: dataDir },
    })
    expect(fromFolder.code).toBe(0)
    expect(fromFolder.stderr).toContain(`signed with the secret in ${dataDir}/jwt-secret`)
    const alice = await createTokenVerifier({ secret: stored })(fromFolder.stdout.trim())
    expect(alice).toMatchObject({ sub: 'alice', roles: ['viewer'] })

    const fromEnv = await runCli(['token', '--sub', 'bob', '--role', 'admin', '--ttl', '60'], {
      env: { PGSCHED_DATA_DIR: dataDir, PGSCHED_JWT_SECRET: SECRET },
    })
    expect(fromEnv.code).toBe(0)
    expect(fromEnv.stderr).toContain('signed with PGSCHED_JWT_SECRET')
    const bob = await createTokenVerifier({ secret: SECRET })(fromEnv.stdout.trim())
    expect(bob).toMatchObject({ sub: 'bob', roles: ['admin'] })
  })
})

describe('start with the embedded database', () => {
  it('listens on 127.0.0.1, prints a token at the first start only, then how to get one', async () => {
    const dataDir = folder()
    const first = await startDev(dataDir)
    expect(first.api).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    const token = /export TOKEN=(ey[\w.-]+)/.exec(first.logs())?.[1]
    expect(token, first.logs()).toBeDefined()
    const jobs = await fetch(`${first.api}/v1/jobs`, {
      headers: { authorization: `Bearer ${token}` },
    })
    expect(jobs.status).toBe(200)
    // Not reachable from the network: any non-loopback address of this machine is refused.
    const port = new URL(first.api).port
    const outside = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)
    if (outside) {
      await expect(fetch(`http://${outside.address}:${port}/healthz`)).rejects.toThrow()
    }
    expect(await first.stop()).toBe(0)

    const again = await startDev(dataDir, { PGSCHED_HOST: '0.0.0.0' })
    expect(again.logs()).not.toMatch(/export TOKEN=ey/)
    expect(again.logs()).toContain(
      `export TOKEN=$(PGSCHED_DATA_DIR=${dataDir} npx pgsched token --sub admin --role admin)`,
    )
    expect(again.api).toMatch(/^http:\/\/localhost:\d+$/)
    expect(again.logs()).toContain('(all interfaces, 0.0.0.0)')
    // The line it prints gives a token this server accepts.
    const minted = await runCli(['token', '--sub', 'admin', '--role', 'admin'], {
      env: { PGSCHED_DATA_DIR: dataDir },
    })
    expect(minted.stderr).toContain(`signed with the secret in ${dataDir}/jwt-secret`)
    const res = await fetch(`${again.api}/v1/jobs`, {
      headers: { authorization: `Bearer ${minted.stdout.trim()}` },
    })
    expect(res.status).toBe(200)
    expect(await again.stop()).toBe(0)
  }, 120_000)

  it('keeps the data folder private and the superuser password out of the temp folder', async () => {
    const dataDir = folder()
    // initdb reads the password from a file: it must not go where other users can read it.
    const tmp = folder('pgsched-cli-tmp-')
    chmodSync(tmp, 0o1777) // as /tmp is
    const seen: string[] = []
    const watcher: FSWatcher = watch(tmp, (_event, name) => name && seen.push(name))
    const first = await startDev(dataDir, { TMPDIR: tmp })
    watcher.close()
    expect(seen.filter((n) => /pass/i.test(n))).toEqual([])
    expect(await first.stop()).toBe(0)

    const uid = process.getuid!()
    const privateFiles = () =>
      readdirSync(dataDir, { withFileTypes: true })
        .filter((e) => !e.isDirectory())
        .map((e) => {
          const st = statSync(join(dataDir, e.name))
          return { name: e.name, mode: (st.mode & 0o7777).toString(8), uid: st.uid }
        })
    expect(privateFiles()).toEqual([
      { name: 'jwt-secret', mode: '600', uid },
      { name: 'pg-password', mode: '600', uid },
    ])
    expect(readdirSync(dataDir).sort()).toEqual(['jwt-secret', 'pg', 'pg-password'])
    expect(statSync(dataDir).mode & 0o066).toBe(0)

    // Files left readable by an older version, or owned by someone else, are fixed at start.
    for (const f of ['jwt-secret', 'pg-password']) chmodSync(join(dataDir, f), 0o644)
    chmodSync(dataDir, 0o755)
    if (uid === 0) chownSync(join(dataDir, 'jwt-secret'), 65534, 65534)
    const again = await startDev(dataDir)
    expect(privateFiles()).toEqual([
      { name: 'jwt-secret', mode: '600', uid },
      { name: 'pg-password', mode: '600', uid },
    ])
    expect(statSync(dataDir).mode & 0o066).toBe(0)
    expect(await again.stop()).toBe(0)
  }, 120_000)

  it('sql-url prints the URL of the running server and starts nothing', async () => {
    const dataDir = folder()
    const none = await runCli(['sql-url'], { env: { PGSCHED_DATA_DIR: dataDir } })
    expect(none.code).toBe(1)
    expect(none.stderr).toContain(`there is no embedded database in ${dataDir}`)
    expect(readdirSync(dataDir)).toEqual([])

    const dev = await startDev(dataDir)
    const pid = readFileSync(join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]
    // Without PGSCHED_EMBEDDED_PG_PORT: the port is the running server's, read from its files.
    const r = await runCli(['sql-url'], { env: { PGSCHED_DATA_DIR: dataDir }, timeoutMs: 10_000 })
    expect(r.code, r.stderr).toBe(0)
    const url = r.stdout.trim()
    expect(url).toMatch(/^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:\d+\/postgres$/)
    const sql = createSql(url, { max: 1 })
    try {
      const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgsched.jobs`
      expect(row!.n).toBe(0)
    } finally {
      await sql.end()
    }
    expect(readFileSync(join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]).toBe(pid)
    expect(await dev.stop()).toBe(0)
  }, 120_000)

  it('a failure to start says why in one line, never "undefined" nor a stack trace', async () => {
    const dataDir = folder()
    const dev = await startDev(dataDir)
    const pgPort = new URL(
      (await runCli(['sql-url'], { env: { PGSCHED_DATA_DIR: dataDir } })).stdout.trim(),
    ).port
    const url = (await runCli(['sql-url'], { env: { PGSCHED_DATA_DIR: dataDir } })).stdout.trim()
    const apiPort = new URL(dev.api).port
    const failures: { args: string[]; env: Record<string, string>; says: RegExp }[] = [
      // The same data folder while its server runs.
      {
        args: ['start'],
        env: { PGSCHED_DATA_DIR: dataDir, PORT: '0' },
        says: /already runs with the data in/,
      },
      // The database port taken.
      {
        args: ['start'],
        env: { PGSCHED_DATA_DIR: folder(), PGSCHED_EMBEDDED_PG_PORT: pgPort, PORT: '0' },
        says: /embedded PostgreSQL did not start: .+/,
      },
      // The API port taken.
      {
        args: ['api'],
        env: {
          DATABASE_URL: url,
          PGSCHED_JWT_SECRET: SECRET,
          PGSCHED_HOST: '127.0.0.1',
          PORT: apiPort,
        },
        says: new RegExp(`port ${apiPort} of 127.0.0.1 is in use: set PORT`),
      },
    ]
    for (const f of failures) {
      const r = await runCli(f.args, {
        env: { PGSCHED_LOG_LEVEL: 'warn', ...f.env },
        timeoutMs: 60_000,
      })
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr).toMatch(f.says)
      expect(r.stderr).not.toContain('undefined')
      expect(r.stderr).not.toMatch(/^\s+at /m)
    }
    expect(await dev.stop()).toBe(0)
  }, 180_000)
})
