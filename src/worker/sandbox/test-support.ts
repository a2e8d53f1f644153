/**
 * @module Helpers for the sandbox tests: a sandbox per mode in a temporary scratch root, unique
 * process markers, and a view of the host's processes. Not used by production code.
 */
import { spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { JOB_LIMITS_DEFAULT } from '../../core/config.ts'
import type { Logger, SandboxMode } from '../../core/types.ts'
import { prepareSandbox, type Sandbox, type SandboxSettings } from './index.ts'
import type { CommandResult } from './process.ts'

/** A prepared sandbox, its scratch root and what it logged. */
export interface SandboxBundle {
  sandbox: Sandbox
  scratchRoot: string
  logs: { level: string; text: string }[]
  /** Stops the sandbox and removes the scratch root. */
  close(): Promise<void>
}

/** Prepares a sandbox in a fresh temporary scratch root. */
export async function setupSandbox(
  mode: SandboxMode,
  settings: Partial<SandboxSettings> = {},
): Promise<SandboxBundle> {
  const scratchRoot = settings.scratchRoot ?? mkdtempSync(join(tmpdir(), 'pgsched-sandbox-test-'))
  const logs: SandboxBundle['logs'] = []
  const log =
    (level: string) =>
    (obj: object | string, msg?: string): void => {
      logs.push({
        level,
        text: `${typeof obj === 'string' ? obj : JSON.stringify(obj)} ${msg ?? ''}`,
      })
    }
  const logger: Logger = {
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
  }
  const sandbox = await prepareSandbox(
    { mode, defaults: { ...JOB_LIMITS_DEFAULT }, ...settings, scratchRoot },
    logger,
  )
  return {
    sandbox,
    scratchRoot,
    logs,
    async close() {
      await sandbox.stop()
      rmSync(scratchRoot, { recursive: true, force: true })
    },
  }
}

/**
 * A `sleep` argument no other process has, so the host's /proc shows which processes a job
 * left: GNU sleep takes fractional seconds.
 */
export function marker(): string {
  return `98.${randomInt(1e9, 1e10)}`
}

/** Host pids of live (not zombie) `sleep <marker>` processes: those a job started and that now run. */
export function sleepers(mark: string): number[] {
  return liveProcesses((argv) => argv[0]?.endsWith('sleep') === true && argv[1] === mark)
}

/**
 * Host pids of live processes whose command line mentions `mark` anywhere: from the moment a
 * shell forks a child to start `sleep <mark>`, some process (the forked shell, setsid, sleep)
 * does, so none left means none of them survived, however far it had got.
 */
export function mentioning(mark: string): number[] {
  return liveProcesses((argv) => argv.some((a) => a.includes(mark)))
}

function liveProcesses(match: (argv: string[]) => boolean): number[] {
  const found: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (!match(readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0'))) continue
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      // PID 1 of a container may never reap orphans; a zombie is dead.
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') found.push(Number(name))
    } catch {
      // Exited while we looked.
    }
  }
  return found
}

/** The attempt folders (not etc) under each instance folder of a scratch root. */
export function attemptFolders(scratchRoot: string): string[] {
  const out: string[] = []
  for (const instance of readdirSync(scratchRoot)) {
    for (const entry of readdirSync(join(scratchRoot, instance))) {
      if (entry !== 'etc') out.push(join(scratchRoot, instance, entry))
    }
  }
  return out
}

// The uid and gid of `nobody` and `nogroup` on Debian: a worker that is not root.
export const NOBODY = 65534

const FIXTURE = new URL('./fixture-worker.ts', import.meta.url).pathname

/**
 * Runs commands in a fresh worker process (fixture-worker.ts) with `env` as its environment and
 * `cwd` as its folder, as root or (`asNobody`) as a plain user; returns what it said when ready
 * and each result.
 */
export async function workerRun(
  mode: SandboxMode,
  cwd: string,
  env: Record<string, string>,
  commands: string[],
  asNobody = false,
): Promise<{ ready: string; results: CommandResult[] }> {
  const scratchRoot = mkdtempSync(join(tmpdir(), 'pgsched-sandbox-test-'))
  if (asNobody) chownSync(scratchRoot, NOBODY, NOBODY)
  const argv = [process.execPath, FIXTURE, mode, scratchRoot, ...commands]
  const asUser = asNobody
    ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--']
    : []
  const [file, ...args] = [...asUser, ...argv] as [string, ...string[]]
  try {
    const child = spawn(file, args, {
      cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
    })
    const code = await new Promise((resolve) => child.on('close', resolve))
    if (code !== 0) throw new Error(`the fixture worker exited with ${code}: ${out}`)
    const [first, ...results] = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    return { ready: first.ready, results }
  } finally {
    rmSync(scratchRoot, { recursive: true, force: true })
  }
}
