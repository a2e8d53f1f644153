/**
 * @module How a sandboxed attempt ended, in the scheduler's words: which limit stopped it, and
 * the command's own status behind bwrap's.
 */
import { constants } from 'node:os'
import type { JobLimits } from '../../core/types.ts'
import type { CgroupHits } from './cgroup.ts'
import { plainVerdict, result } from './none.ts'
import type { CommandResult, ProcessEnd } from './process.ts'

// A shell reports a child killed by signal n as exit status 128 + n, and so does bwrap for
// the command it runs.
const SHELL_SIGNAL_BASE = 128
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]))

/** What the sandbox knows besides how the process ended. */
interface VerdictContext {
  timeoutMs: number
  limits: Required<JobLimits>
  hits: CgroupHits
  /** bwrap: the exit status is 128 + n for a command killed by signal n. */
  statusFromBwrap: boolean
  /** bwrap: whether it got as far as starting the command (it reported its init's pid). */
  started: boolean
  /**
   * The limits only an rlimit enforced, with no cgroup to record a hit: RLIMIT_AS makes an
   * allocation fail and RLIMIT_NPROC a fork, which the program reports in its own way.
   */
  rlimitOnly: { memory: boolean; processes: boolean }
}

/** Turns how the process ended into a result that names the limit that stopped it. */
export function sandboxVerdict(end: ProcessEnd, ctx: VerdictContext): CommandResult {
  if (end.startError === null && !ctx.started && end.stopReason === null) {
    const why = end.output.trim().split('\n').slice(-3).join('; ')
    return result(end.code, end.signal, end.output, 'failed', `the sandbox failed to start: ${why}`)
  }
  const status = ctx.statusFromBwrap ? commandStatus(end) : end
  const plain = plainVerdict(status, ctx.timeoutMs)
  if (plain.outcome !== 'failed' || end.startError !== null) return plain
  const limitError = limitHit(status, ctx)
  if (limitError !== null) return { ...plain, error: limitError }
  if (ctx.hits.processes) {
    return {
      ...plain,
      error: `${plain.error}; process limit of ${ctx.limits.max_processes} exceeded`,
    }
  }
  const unseen = unseenLimits(ctx)
  return unseen === null ? plain : { ...plain, error: `${plain.error} (${unseen})` }
}

/**
 * The limits a failure may have come from without anything recording it. Nothing tells such a
 * hit from any other failure (the program's "Cannot allocate memory" is its own words), so the
 * error says which limits were in force rather than guess.
 */
function unseenLimits(ctx: VerdictContext): string | null {
  const limits = [
    ...(ctx.rlimitOnly.memory ? [`memory ${ctx.limits.memory_mb} MiB`] : []),
    ...(ctx.rlimitOnly.processes ? [`processes ${ctx.limits.max_processes}`] : []),
  ]
  if (limits.length === 0) return null
  return `limits in force via rlimits, with no cgroup to record a hit: ${limits.join(', ')}; a hit shows only as the program's own failure`
}

/**
 * bwrap exits with the command's status, and with 128 + n when the command was killed by signal
 * n. A command that itself exits with 128 + n is reported as killed by n, as a shell reports it.
 */
function commandStatus(end: ProcessEnd): ProcessEnd {
  const { code } = end
  if (code === null || code <= SHELL_SIGNAL_BASE) return end
  const name = SIGNAL_NAMES.get(code - SHELL_SIGNAL_BASE)
  return name === undefined ? end : { ...end, code: null, signal: name }
}

function limitHit(status: ProcessEnd, ctx: VerdictContext): string | null {
  if (ctx.hits.memory) return `memory limit of ${ctx.limits.memory_mb} MiB exceeded`
  if (killedBy(status, 'SIGXCPU')) return `cpu time limit of ${ctx.limits.cpu_seconds} s exceeded`
  if (killedBy(status, 'SIGXFSZ'))
    return `file size limit of ${ctx.limits.file_size_mb} MiB exceeded`
  return null
}

// The command itself, or a child whose status its shell passed on.
function killedBy(status: ProcessEnd, name: 'SIGXCPU' | 'SIGXFSZ'): boolean {
  return status.signal === name || status.code === SHELL_SIGNAL_BASE + constants.signals[name]
}
