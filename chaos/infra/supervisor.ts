/**
 * @module
 * The chaos drills' process supervisor: every daemon of the stack (etcd, Patroni, HAProxy,
 * pgsched) is started here, tracked by PID with its log in the run folder, and stopped by PID —
 * SIGTERM to its process group, SIGKILL after a grace — when the drill ends normally, throws, or
 * gets SIGINT/SIGTERM. Nothing is ever killed by name.
 */
import { spawn, spawnSync } from 'node:child_process'
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
} from 'node:fs'

/** How long a stopped process may take before SIGKILL. */
export const STOP_GRACE_MS_DEFAULT = 8_000

/** How to start one supervised process. */
export interface StartOptions {
  /** Environment added to this process's own (or the whole one, with `inheritEnv: false`). */
  env?: Record<string, string | undefined>
  /** @default true */
  inheritEnv?: boolean
  cwd?: string
  /** Run as the `postgres` user (through `setpriv`), for daemons that refuse root. */
  asPostgres?: boolean
  /** Run inside this network namespace (through `ip netns exec`). */
  netns?: string
  /** Resolve only once the log contains this. */
  ready?: string | RegExp
  /** @default 30000 */
  readyTimeoutMs?: number
}

/** A process started by the supervisor. */
export interface Proc {
  name: string
  pid: number
  logFile: string
  /** The exit code (null when killed by a signal) once it has exited. */
  exited: Promise<number | null>
  running(): boolean
  /** Its log so far. */
  log(): string
}

/** Polls `check` every 100 ms until it returns a truthy value; throws after `timeoutMs`. */
export async function until<T>(
  check: () => Promise<T> | T,
  timeoutMs: number,
  what: string | (() => string | Promise<string>),
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    let v: T | undefined
    try {
      v = await check()
    } catch {
      v = undefined
    }
    if (v) return v as NonNullable<T>
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? await what() : what}`,
      )
    }
    await sleep(100)
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Whether a process with this PID exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** Prints a progress line. */
export function say(line: string): void {
  console.log(`[chaos] ${line}`)
}

/**
 * Owns a run folder under /tmp and every process and cleanup of one chaos run. Cleanups (network
 * namespaces, data folders) run in reverse order of registration after the processes stop.
 */
export class Supervisor {
  /** The run folder: logs and configuration files. */
  readonly folder: string
  readonly #procs = new Map<number, { proc: Proc; group: boolean; done: boolean }>()
  readonly #cleanups: { what: string; run: () => void | Promise<void> }[] = []
  #stopping: Promise<void> | undefined
  #counter = 0

  constructor(prefix = 'pgsched-chaos') {
    this.folder = mkdtempSync(`/tmp/${prefix}-`)
    mkdirSync(`${this.folder}/logs`)
  }

  /**
   * Stops everything on SIGINT/SIGTERM (exit 130/143), on an uncaught exception or rejection
   * (exit 1), and — synchronously, SIGKILL only — on any other exit that skipped {@link stopAll}.
   */
  installHandlers(): void {
    const bail = (code: number) => () => {
      say(`signal: stopping every process (log folder ${this.folder})`)
      void this.stopAll().finally(() => process.exit(code))
    }
    process.once('SIGINT', bail(130))
    process.once('SIGTERM', bail(143))
    const crash = (e: unknown) => {
      console.error('[chaos] fatal:', e)
      void this.stopAll().finally(() => process.exit(1))
    }
    process.once('uncaughtException', crash)
    process.once('unhandledRejection', crash)
    process.once('exit', () => this.#killAllNow())
  }

  /** Starts `command args` as `name`; its output goes to `logs/<name>.log`. */
  async start(name: string, command: string, args: string[], o: StartOptions = {}): Promise<Proc> {
    if (this.#stopping) throw new Error(`not starting ${name}: the supervisor is stopping`)
    let argv = [command, ...args]
    if (o.asPostgres) {
      argv = ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', ...argv]
    }
    if (o.netns) argv = ['ip', 'netns', 'exec', o.netns, ...argv]
    const logFile = `${this.folder}/logs/${name}.${++this.#counter}.log`
    const fd = openSync(logFile, 'a', 0o644)
    const env = Object.fromEntries(
      Object.entries(o.inheritEnv === false ? (o.env ?? {}) : { ...process.env, ...o.env }).filter(
        ([, v]) => v !== undefined,
      ),
    ) as Record<string, string>
    // Its own process group, so a stop reaches what it started (Patroni's postgres, bwrap).
    const child = spawn(argv[0]!, argv.slice(1), {
      env,
      cwd: o.cwd,
      stdio: ['ignore', fd, fd],
      detached: true,
    })
    closeSync(fd)
    const pid = child.pid
    if (pid === undefined) {
      throw new Error(`${name}: could not start ${argv.join(' ')} (see ${logFile})`)
    }
    let exitCode: number | null | undefined
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => {
        exitCode = code
        entry.done = true
        resolve(code)
      })
    })
    const proc: Proc = {
      name,
      pid,
      logFile,
      exited,
      running: () => exitCode === undefined,
      log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    }
    const entry = { proc, group: true, done: false }
    this.#procs.set(pid, entry)
    if (o.ready !== undefined) {
      const ready = o.ready
      const seen = () =>
        typeof ready === 'string' ? proc.log().includes(ready) : ready.test(proc.log())
      try {
        // `until` treats a throw as "not yet", so an early exit is a value, thrown after.
        const state = await until(
          () => (seen() ? 'ready' : exitCode !== undefined ? 'exited' : null),
          o.readyTimeoutMs ?? 30_000,
          () => `${name} to be ready (${String(ready)}); log:\n${tail(proc)}`,
        )
        if (state === 'exited') {
          throw new Error(`${name} exited (${exitCode}) before it was ready:\n${tail(proc)}`)
        }
      } catch (e) {
        await this.stop(proc, 2_000)
        throw e
      }
    }
    return proc
  }

  /** Sends `signal` to one process (not its group): the fault injector. */
  kill(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
    try {
      process.kill(pid, signal)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e
    }
  }

  /** SIGTERM to `proc`'s process group, SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(proc: Proc, graceMs = STOP_GRACE_MS_DEFAULT): Promise<void> {
    if (!proc.running()) return
    signalGroup(proc.pid, 'SIGTERM')
    const timer = setTimeout(() => signalGroup(proc.pid, 'SIGKILL'), graceMs)
    await proc.exited
    clearTimeout(timer)
    // Whatever of its group is left (a child that ignored SIGTERM) goes too, and is waited for.
    signalGroup(proc.pid, 'SIGKILL')
    await until(() => !groupAlive(proc.pid), 5_000, `process group ${proc.pid} to end`).catch(
      () => undefined,
    )
  }

  /** Registers a cleanup that runs after every process has stopped, newest first. */
  onCleanup(what: string, run: () => void | Promise<void>): void {
    this.#cleanups.push({ what, run })
  }

  /** Processes started and not yet exited. */
  running(): Proc[] {
    return [...this.#procs.values()].filter((e) => !e.done).map((e) => e.proc)
  }

  /** Stops every process (newest first, in parallel by layer), then runs the cleanups. */
  stopAll(): Promise<void> {
    this.#stopping ??= (async () => {
      const procs = this.running().reverse()
      // pgsched first (it talks to the rest), then the daemons it used.
      const order = (p: Proc) => (p.name.startsWith('pgsched') ? 0 : p.name === 'haproxy' ? 1 : 2)
      for (const layer of [0, 1, 2]) {
        await Promise.all(procs.filter((p) => order(p) === layer).map((p) => this.stop(p)))
      }
      for (const c of this.#cleanups.reverse()) {
        try {
          await c.run()
        } catch (e) {
          console.error(`[chaos] cleanup ${c.what} failed:`, e)
        }
      }
    })()
    return this.#stopping
  }

  #killAllNow(): void {
    for (const e of this.#procs.values()) if (!e.done) signalGroup(e.proc.pid, 'SIGKILL')
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal)
  } catch {
    try {
      process.kill(pid, signal)
    } catch {
      // Already gone.
    }
  }
}

/** Whether any process of group `pgid` is alive (zombies do not count). */
export function groupAlive(pgid: number): boolean {
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

function tail(proc: Proc, lines = 30): string {
  return proc.log().split('\n').slice(-lines).join('\n')
}

/** Runs a command to completion (synchronously); throws with its output when it fails. */
export function run(
  command: string,
  args: string[],
  o: {
    asPostgres?: boolean
    netns?: string
    allowFail?: boolean
    env?: Record<string, string>
  } = {},
): string {
  let argv = [command, ...args]
  if (o.asPostgres) {
    argv = ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', ...argv]
  }
  if (o.netns) argv = ['ip', 'netns', 'exec', o.netns, ...argv]
  const r = spawnSync(argv[0]!, argv.slice(1), {
    encoding: 'utf8',
    env: { ...process.env, ...o.env },
    timeout: 120_000,
  })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
  if (r.status !== 0 && !o.allowFail) {
    throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}):\n${out}`)
  }
  return out
}

/** Runs a command asynchronously as {@link run} does; resolves to its output. */
export function runAsync(
  command: string,
  args: string[],
  o: {
    asPostgres?: boolean
    netns?: string
    allowFail?: boolean
    env?: Record<string, string>
    timeoutMs?: number
    cwd?: string
  } = {},
): Promise<{ code: number | null; out: string }> {
  let argv = [command, ...args]
  if (o.asPostgres) {
    argv = ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', ...argv]
  }
  if (o.netns) argv = ['ip', 'netns', 'exec', o.netns, ...argv]
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      env: { ...process.env, ...o.env },
      cwd: o.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000)
    child.once('close', (code) => {
      clearTimeout(timer)
      if (code !== 0 && !o.allowFail) {
        reject(new Error(`${argv.join(' ')} failed (${code}):\n${out}`))
      } else resolve({ code, out })
    })
  })
}
