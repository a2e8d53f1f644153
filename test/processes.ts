/** Helpers for tests that run pgsched (or Postgres) as real processes. */
import { type ChildProcess, spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'

import { startEmbeddedPostgres } from '../src/runtime/embedded-postgres.ts'

/** `T` without its falsy members. */
type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  timeoutMs = 10_000,
  what: string | (() => string) = 'condition',
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v as Truthy<T>
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`,
      )
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A TCP port free on loopback right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
    srv.on('error', reject)
  })
}

/** A service started as a child process. */
export interface Service {
  child: ChildProcess
  /** Everything it printed so far. */
  logs(): string
  /** SIGTERM, then wait for the exit; resolves to the exit code. */
  stop(): Promise<number | null>
  /** Resolves to the exit code (null when killed by a signal) once the process has exited. */
  exited: Promise<number | null>
}

/**
 * Starts `command` and waits until its output includes `ready`. With `options.inheritEnv` false,
 * `env` is the whole environment (not added to this process's); `options.cwd` is its folder;
 * with `options.failOnExit`, an exit before `ready` fails at once instead of at the time limit.
 */
export async function startService(
  command: string,
  args: string[],
  env: Record<string, string>,
  ready: string,
  timeoutMs = 20_000,
  options: { cwd?: string; inheritEnv?: boolean; failOnExit?: boolean } = {},
): Promise<Service> {
  const child = spawn(command, args, {
    env: options.inheritEnv === false ? env : { ...process.env, ...env },
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let logs = ''
  child.stdout!.on('data', (d) => (logs += d))
  child.stderr!.on('data', (d) => (logs += d))
  let exitCode: number | null | undefined
  const exited = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      exitCode = code
      r(code)
    }),
  )
  const service: Service = {
    child,
    logs: () => logs,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      return exited
    },
  }
  try {
    await waitFor(
      () => {
        if (options.failOnExit && exitCode !== undefined && !logs.includes(ready)) {
          throw new Error(`${command} exited (${exitCode}) before printing "${ready}":\n${logs}`)
        }
        return logs.includes(ready)
      },
      timeoutMs,
      () => `${command} to print "${ready}"; output:\n${logs}`,
    )
  } catch (e) {
    await service.stop()
    throw e
  }
  return service
}

/** The pinned Node 24 (type stripping), even when vitest itself was started by an older node. */
export const NODE = existsSync('node_modules/.bin/node')
  ? 'node_modules/.bin/node'
  : process.execPath

/** What each pgsched command prints once it is up. */
const READY = {
  start: 'pgsched API listening',
  api: 'pgsched API listening',
  scheduler: 'pgsched: scheduler started',
  worker: 'pgsched: worker started',
} as const

/** Starts `pgsched <command>` as a child process with `env` and waits until it is up. */
export function startPgsched(
  command: keyof typeof READY,
  env: Record<string, string>,
): Promise<Service> {
  return startService(NODE, ['src/runtime/node.ts', command], env, READY[command])
}

/**
 * Whether any process of group `pgid` is still running. Zombies do not count: a killed process
 * whose parent died stays a zombie until the machine's init reaps it, which can take seconds.
 */
export function groupRunning(pgid: number): boolean {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    } catch {
      continue
    }
    // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (Number(pgrp) === pgid && state !== 'Z') return true
  }
  return false
}

/** An embedded PostgreSQL in a new temporary folder (`dir`), deleted when it stops. */
export async function startTemporaryPostgres(
  prefix: string,
): Promise<{ url: string; dir: string; stop(): Promise<void> }> {
  // Under the system temp folder, which the postgres user can reach when run as root.
  const dir = mkdtempSync(`${tmpdir()}/${prefix}-`)
  chmodSync(dir, 0o711)
  const server = await startEmbeddedPostgres({
    dataDir: dir,
    port: await freePort(),
    ephemeral: true,
  })
  return {
    url: server.url,
    dir,
    async stop() {
      await server.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** The CLI's entry point, absolute: CLI tests run it from other folders. */
export const CLI = fileURLToPath(new URL('../src/runtime/node.ts', import.meta.url))

/**
 * This process's environment without pgsched's settings (DATABASE_URL, PORT, PGSCHED_*) or the
 * test server's, plus `env`: a CLI run sees no configuration but what its test gives it.
 */
export function cliEnv(env: Record<string, string> = {}): Record<string, string> {
  const base = Object.entries(process.env).filter(
    ([k, v]) =>
      v !== undefined &&
      !k.startsWith('PGSCHED_') &&
      !['DATABASE_URL', 'TEST_DATABASE_URL', 'PORT'].includes(k),
  ) as [string, string][]
  return { ...Object.fromEntries(base), ...env }
}

/** What a finished CLI run printed, and how it ended. */
export interface CliResult {
  /** Exit code; null when killed (at the time limit). */
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Runs `pgsched ...args` with the pinned Node (`process.execPath`, vitest's own) and the
 * environment of {@link cliEnv}; kills it after `timeoutMs`.
 */
export function runCli(
  args: string[],
  o: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; cli?: string } = {},
): Promise<CliResult> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [o.cli ?? CLI, ...args], {
      env: cliEnv(o.env),
      cwd: o.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d) => (stdout += d))
    child.stderr!.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 30_000)
    child.once('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })
}

/**
 * Starts `pgsched ...args` (by default `start`) as {@link runCli} does and waits until it prints
 * `ready` (by default the admin token line, printed last by `start`).
 */
export function startCli(
  args: string[],
  o: {
    env?: Record<string, string>
    cwd?: string
    ready?: string
    timeoutMs?: number
    cli?: string
  } = {},
): Promise<Service> {
  return startService(
    process.execPath,
    [o.cli ?? CLI, ...args],
    cliEnv(o.env),
    o.ready ?? 'admin token',
    o.timeoutMs ?? 60_000,
    { cwd: o.cwd, inheritEnv: false, failOnExit: true },
  )
}
