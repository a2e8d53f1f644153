/**
 * @module Mode `none`: how a command run as the worker's own user (no limits to blame) ended.
 * No isolation: for trusted single-user development only.
 */
import { type CommandResult, formatDuration, type ProcessEnd } from './process.ts'

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
