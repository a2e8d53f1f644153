/**
 * @module Mode `none`: a shell command as the worker's own user, in its own process group, with a
 * minimal environment. No isolation: for trusted single-user development only.
 */
import {
  type CommandResult,
  formatDuration,
  type ProcessEnd,
  runProcess,
  type StopOptions,
} from './process.ts'

/** How to run one shell command without a sandbox. */
export interface CommandOptions extends StopOptions {
  /** Shell command line, run with /bin/sh -c. */
  command: string
  /** Extra environment variables on top of the small inherited allowlist. */
  env?: Record<string, string>
  /** Working directory; defaults to the worker's. */
  cwd?: string
}

// The worker's own environment holds secrets (DATABASE_URL, PGSCHED_JWT_SECRET),
// so jobs only see what a shell needs to behave normally.
const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'USER', 'SHELL'] as const

/**
 * Runs a shell command as the worker itself, in its own process group, with a timeout,
 * cancellation and a bounded output tail. It isolates nothing: jobs go through a Sandbox.
 */
export async function runCommand(opts: CommandOptions): Promise<CommandResult> {
  const env: Record<string, string> = {}
  for (const key of INHERITED_ENV) {
    const value = process.env[key]
    if (value !== undefined) env[key] = value
  }
  Object.assign(env, opts.env)
  const end = await runProcess({
    ...opts,
    file: '/bin/sh',
    args: ['-c', opts.command],
    env,
    cwd: opts.cwd ?? process.cwd(),
  })
  return plainVerdict(end, opts.timeoutMs)
}

/** Turns how a process ended into a result, with no limits to blame. */
export function plainVerdict(end: ProcessEnd, timeoutMs: number): CommandResult {
  const { code, signal, output } = end
  if (end.startError !== null) return result(null, null, '', 'failed', end.startError)
  if (end.stopReason === 'timed_out') {
    return result(code, signal, output, 'timed_out', `timed out after ${formatDuration(timeoutMs)}`)
  }
  if (end.stopReason === 'cancelled') return result(code, signal, output, 'cancelled', 'cancelled')
  if (code === 0) return result(0, null, output, 'succeeded', null)
  if (code !== null) return result(code, null, output, 'failed', `exited with code ${code}`)
  return result(null, signal, output, 'failed', `killed by ${signal ?? 'an unknown signal'}`)
}

/** Builds a CommandResult. */
export function result(
  exitCode: number | null,
  signal: string | null,
  output: string,
  outcome: CommandResult['outcome'],
  error: string | null,
): CommandResult {
  return { exitCode, signal, output, outcome, error }
}
