import { randomBytes } from 'node:crypto'
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { createServer, type Server } from 'node:net'
import { networkInterfaces, tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { SandboxMode } from '../../core/types.ts'
import type { CommandResult } from './process.ts'
import {
  attemptFolders,
  marker,
  mentioning,
  NOBODY,
  type SandboxBundle,
  setupSandbox,
  sleepers,
  workerRun,
} from './test-support.ts'

// Every test here is an attack a job could try; each one succeeds against a plain
// `/bin/sh -c` run as the (root) worker in its project folder.

/** A temporary project folder laid out like a dev worker's, with secrets in its data folder. */
function makeProject(
  secretMode: number,
  owner?: number,
): { dir: string; jwt: string; password: string } {
  const dir = mkdtempSync(join(tmpdir(), 'pgsched-project-'))
  chmodSync(dir, 0o755)
  const jwt = `jwt-${randomBytes(8).toString('hex')}`
  const password = `pw-${randomBytes(8).toString('hex')}`
  mkdirSync(join(dir, '.pgsched'), { mode: 0o711 })
  writeFileSync(join(dir, '.pgsched', 'jwt-secret'), jwt, { mode: secretMode })
  writeFileSync(join(dir, '.pgsched', 'pg-password'), password, { mode: secretMode })
  chmodSync(join(dir, '.pgsched', 'jwt-secret'), secretMode)
  chmodSync(join(dir, '.pgsched', 'pg-password'), secretMode)
  mkdirSync(join(dir, 'node_modules'))
  if (owner !== undefined) {
    for (const p of ['.pgsched', '.pgsched/jwt-secret', '.pgsched/pg-password']) {
      chownSync(join(dir, p), owner, owner)
    }
  }
  return { dir, jwt, password }
}

/** workerRun as root, in a mode that must be ready. */
async function inWorker(
  mode: SandboxMode,
  cwd: string,
  env: Record<string, string>,
  commands: string[],
): Promise<CommandResult[]> {
  const { ready, results } = await workerRun(mode, cwd, env, commands)
  expect(ready).toBe(mode)
  return results
}

describe.each([
  // bwrap hides even world-readable files; rlimits relies on the owner-only modes pgsched uses.
  ['bwrap', 0o644],
  ['rlimits', 0o600],
] as const)('%s mode: a job run by a worker', (mode, secretMode) => {
  const envSecret = `env-${randomBytes(8).toString('hex')}`
  let project: ReturnType<typeof makeProject>
  let results: CommandResult[]

  beforeAll(async () => {
    project = makeProject(secretMode)
    results = await inWorker(
      mode,
      project.dir,
      { PGSCHED_JWT_SECRET: envSecret, DATABASE_URL: `postgres://pgsched:${envSecret}@db/pgsched` },
      [
        `cat .pgsched/jwt-secret "$OLDPWD/.pgsched/jwt-secret" ${project.dir}/.pgsched/jwt-secret ${project.dir}/.pgsched/pg-password; ls ${project.dir}`,
        `cat /proc/*/environ | tr '\\0' '\\n'; env; ps -eo pid,args e 2>/dev/null`,
      ],
    )
  }, 30_000)
  afterAll(() => rmSync(project.dir, { recursive: true, force: true }))

  it('cannot read the secrets in the data folder, by relative or absolute path', () => {
    const [res] = results
    expect(res?.output).not.toContain(project.jwt)
    expect(res?.output).not.toContain(project.password)
    expect(res?.output).toMatch(/No such file or directory|Permission denied/)
    // rlimits isolates nothing: the job may list a world-readable folder, only not read 0600 files.
    if (mode === 'bwrap') expect(res?.output).not.toContain('node_modules')
  })

  it('cannot read the worker’s environment, not even through /proc/*/environ', () => {
    const res = results[1]
    expect(res?.output).not.toContain(envSecret)
    expect(res?.output).toContain('PATH=')
  })
})

describe('a worker that is not root', () => {
  // Its jobs can only run as the worker's own uid (bwrap maps it to nobody in a namespace of
  // its own); without namespaces nothing would then keep them from the worker's files and
  // environment, so rlimits mode refuses them rather than run them unisolated.
  const envSecret = `env-${randomBytes(8).toString('hex')}`
  let project: ReturnType<typeof makeProject>
  const attack = () => [
    `cat ${project.dir}/.pgsched/jwt-secret; cat /proc/*/environ | tr '\\0' '\\n'; true`,
  ]

  beforeAll(() => {
    project = makeProject(0o600, NOBODY)
  })
  afterAll(() => rmSync(project.dir, { recursive: true, force: true }))

  it('refuses command jobs in rlimits mode, says why at start, and runs nothing', async () => {
    const { ready, results } = await workerRun(
      'rlimits',
      project.dir,
      { PGSCHED_JWT_SECRET: envSecret },
      attack(),
      true,
    )
    const why = `rlimits mode runs each job as another user, which needs a worker running as root (this one runs as uid ${NOBODY})`
    expect(ready).toContain(`unavailable: ${why}`)
    expect(results).toEqual([
      expect.objectContaining({
        outcome: 'failed',
        output: '',
        error: expect.stringContaining(`the sandbox is unavailable: ${why}`),
      }),
    ])
  })

  it('still isolates them in bwrap mode', async () => {
    const { ready, results } = await workerRun(
      'bwrap',
      project.dir,
      { PGSCHED_JWT_SECRET: envSecret },
      attack(),
      true,
    )
    expect(ready).toBe('bwrap')
    expect(results[0]?.outcome).toBe('succeeded')
    expect(results[0]?.output).toContain('No such file or directory')
    expect(results[0]?.output).not.toContain(project.jwt)
    expect(results[0]?.output).not.toContain(envSecret)
  })
})

describe.each(['bwrap', 'rlimits'] as const)('%s mode: a job', (mode) => {
  let b: SandboxBundle
  let project: string
  const tag = randomBytes(6).toString('hex')
  const hostFile = join(tmpdir(), `pgsched-host-${tag}`)
  const run = (command: string, network = false) =>
    b.sandbox.run({ command, timeoutMs: 10_000, limits: {}, network })

  beforeAll(async () => {
    b = await setupSandbox(mode)
    project = mkdtempSync(join(tmpdir(), 'pgsched-project-'))
    chmodSync(project, 0o755)
    // World-writable in bwrap mode: the sandbox, not the file mode, is what protects it.
    writeFileSync(hostFile, 'original', { mode: mode === 'bwrap' ? 0o666 : 0o644 })
    chmodSync(hostFile, mode === 'bwrap' ? 0o666 : 0o644)
  })
  afterAll(async () => {
    await b.close()
    rmSync(project, { recursive: true, force: true })
    rmSync(hostFile, { force: true })
  })

  it('is not root', async () => {
    const res = await run('id -u')
    expect(res.outcome).toBe('succeeded')
    expect(res.output.trim()).toMatch(/^\d+$/)
    expect(res.output.trim()).not.toBe('0')
  })

  it('cannot write outside its scratch folder and /tmp', async () => {
    const targets = [
      `/etc/pgsched-${tag}`,
      `/usr/pgsched-${tag}`,
      join(project, `pgsched-${tag}`),
      hostFile,
    ]
    const res = await run(
      targets
        .map((t) => `(echo pwned > ${t}) 2>/dev/null && echo "wrote ${t}"`)
        .join('; ')
        .concat('; true'),
    )
    expect(res.outcome).toBe('succeeded')
    for (const t of targets.slice(0, 3)) expect(existsSync(t)).toBe(false)
    expect(readFileSync(hostFile, 'utf8')).toBe('original')
    // bwrap: the job's own /tmp is a fresh tmpfs, so the write "succeeds" there and nowhere else.
    if (mode === 'rlimits') expect(res.output).toBe('')
    else expect(res.output).toBe(`wrote ${hostFile}\n`)
  })

  it('leaves no process behind that escaped with setsid or a double fork', async () => {
    const [m1, m2] = [marker(), marker()]
    const res = await run(`(setsid sleep ${m1} &); (sh -c 'sleep ${m2} &' &); echo started`)
    expect(res).toMatchObject({ outcome: 'succeeded', output: 'started\n' })
    expect(mentioning(m1)).toEqual([])
    expect(mentioning(m2)).toEqual([])
  })

  it('leaves no process behind when cancelled', async () => {
    const m = marker()
    const ac = new AbortController()
    const running = b.sandbox.run({
      command: `(setsid sleep ${m} &); sleep ${m}`,
      timeoutMs: 10_000,
      killGraceMs: 500,
      signal: ac.signal,
      limits: {},
      network: false,
    })
    await expect.poll(() => sleepers(m).length, { timeout: 5_000 }).toBe(2)
    ac.abort()
    expect((await running).outcome).toBe('cancelled')
    expect(mentioning(m)).toEqual([])
  })
})

describe('bwrap mode: a job', () => {
  let b: SandboxBundle
  let server: Server
  let port: number

  beforeAll(async () => {
    b = await setupSandbox('bwrap')
    server = createServer((s) => s.end('hello'))
    await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve))
    port = (server.address() as { port: number }).port
  })
  afterAll(async () => {
    await b.close()
    server.close()
  })

  const connect = (host: string) =>
    `python3 -c "import socket; s = socket.create_connection(('${host}', ${port}), timeout=3); print('connected', s.recv(5))"`

  it('cannot reach a port on the host’s loopback', async () => {
    const res = await b.sandbox.run({
      command: connect('127.0.0.1'),
      timeoutMs: 10_000,
      limits: {},
      network: false,
    })
    expect(res.outcome).toBe('failed')
    expect(res.output).toContain('ConnectionRefusedError')
  })

  it('cannot reach any other address', async () => {
    const external = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && !i.internal && i.family === 'IPv4')?.address
    for (const host of [external, '1.1.1.1'].filter((h) => h !== undefined)) {
      const res = await b.sandbox.run({
        command: connect(host),
        timeoutMs: 10_000,
        limits: {},
        network: false,
      })
      expect(res.outcome).toBe('failed')
      expect(res.output).toContain('Network is unreachable')
    }
  })

  it('with network: true reaches the host’s loopback', async () => {
    const res = await b.sandbox.run({
      command: connect('127.0.0.1'),
      timeoutMs: 10_000,
      limits: {},
      network: true,
    })
    expect(res).toMatchObject({ outcome: 'succeeded', output: "connected b'hello'\n" })
  })

  it('sees only the system, its scratch folder, its own /tmp, /proc and /dev, and a minimal /etc', async () => {
    const res = await b.sandbox.run({
      command: 'ls / /etc',
      timeoutMs: 10_000,
      limits: {},
      network: false,
    })
    const hostLibs = ['lib', 'lib32', 'lib64', 'libx32'].filter((d) => existsSync(`/${d}`))
    const root = ['bin', 'dev', 'etc', ...hostLibs, 'proc', 'sbin', 'scratch', 'tmp', 'usr'].sort()
    const etc = [
      'alternatives',
      'group',
      'hosts',
      'ld.so.cache',
      'localtime',
      'nsswitch.conf',
      'passwd',
    ]
    expect(res.output).toBe(`/:\n${root.join('\n')}\n\n/etc:\n${etc.join('\n')}\n`)
  })

  it('cannot make a user namespace of its own (and with it, capabilities)', async () => {
    const res = await b.sandbox.run({
      command: 'unshare -Ur id -u',
      timeoutMs: 10_000,
      limits: {},
      network: false,
    })
    expect(res.outcome).toBe('failed')
    expect(res.output).toContain('unshare failed')
  })

  it('sees neither the files nor the processes of another job running at the same time', async () => {
    const m = marker()
    const ac = new AbortController()
    const first = b.sandbox.run({
      command: `echo secret-of-a > mine; sleep ${m}`,
      timeoutMs: 10_000,
      signal: ac.signal,
      limits: {},
      network: false,
    })
    try {
      await expect.poll(() => sleepers(m).length, { timeout: 5_000 }).toBe(1)
      const [folderOfA] = attemptFolders(b.scratchRoot)
      const res = await b.sandbox.run({
        command: `ls /proc | grep -c '^[0-9]'; cat /proc/[0-9]*/cmdline | tr '\\0' ' '; find / -path /proc -prune -o -path /usr -prune -o -name mine -print 2>/dev/null; cat ${folderOfA}/mine; true`,
        timeoutMs: 10_000,
        limits: {},
        network: false,
      })
      expect(res.outcome).toBe('succeeded')
      expect(res.output).not.toContain(m)
      expect(res.output).not.toContain('secret-of-a')
      expect(res.output).toContain('No such file or directory')
      // Its own init, its shell and the few it forks: nothing of the host or the other job.
      expect(Number(res.output.split('\n')[0])).toBeLessThan(6)
    } finally {
      ac.abort()
      await first
    }
  })
})
