/** @module Executes one attempt of a run: a shell command in the sandbox, or a task handler. */
import type { Logger } from '../core/types.ts'
import type { AttemptResult, StartedRun } from '../db/queries/runs.ts'
import { currentTraceparent } from '../telemetry/tracing.ts'
import { OUTPUT_TAIL_BYTES, type Sandbox } from './sandbox.ts'
import type { TaskRegistry } from './tasks.ts'
import { execSpan } from './telemetry.ts'

/**
 * Why the worker stops an attempt early: the user cancelled it, the worker is shutting down and
 * hands it back, or the worker learned the run was rescued from it (its result would be dropped).
 */
export type StopReason = 'cancelled' | 'shutdown' | 'superseded'

/** Longest wait between SIGTERM and SIGKILL when a user cancels a command. */
const CANCEL_KILL_GRACE_MS = 1_500

/** What executing an attempt needs besides the run. */
interface ExecuteOptions {
  tasks: TaskRegistry
  /** Where command jobs run. */
  sandbox: Sandbox
  killGraceMs: number
  /** Aborted with a StopReason. */
  signal: AbortSignal
  logger: Logger
}

/** Runs the attempt to its end and reports the result; never throws. */
export async function executeAttempt(run: StartedRun, o: ExecuteOptions): Promise<AttemptResult> {
  const result = storable(await execute(run, o))
  if (result.outcome === 'cancelled' && o.signal.reason === ('shutdown' satisfies StopReason)) {
    return { ...result, outcome: 'interrupted', error: 'the worker shut down; handed back' }
  }
  return result
}

/**
 * The result with every NUL replaced by U+FFFD: PostgreSQL text cannot hold NUL, and a command
 * that prints one (or a handler that throws one) would otherwise leave a result that can never
 * be written, its run held by the worker forever.
 */
function storable(r: AttemptResult): AttemptResult {
  const clean = (s: string | null) => (s?.includes('\0') ? s.replaceAll('\0', '\uFFFD') : s)
  return { ...r, output: clean(r.output), error: clean(r.error) }
}

async function execute(run: StartedRun, o: ExecuteOptions): Promise<AttemptResult> {
  if (run.kind === 'command') {
    const r = await execSpan(run, o.sandbox.describe(), () => {
      // The command continues the trace of its exec span; untraced, that of the submission.
      const traceparent = currentTraceparent() ?? run.traceparent
      return o.sandbox.run({
        command: run.command!,
        limits: run.limits,
        network: run.network,
        timeoutMs: run.timeout_seconds * 1000,
        killGraceMs: o.killGraceMs,
        cancelKillGraceMs: Math.min(o.killGraceMs, CANCEL_KILL_GRACE_MS),
        signal: o.signal,
        env: {
          PGSCHED_RUN_ID: String(run.run_id),
          PGSCHED_JOB_ID: String(run.job_id),
          PGSCHED_ATTEMPT: String(run.attempt),
          ...(traceparent ? { TRACEPARENT: traceparent } : {}),
        },
      })
    })
    return { outcome: r.outcome, exitCode: r.exitCode, output: r.output, error: r.error }
  }
  return executeTask(run, o)
}

async function executeTask(run: StartedRun, o: ExecuteOptions): Promise<AttemptResult> {
  const handler = o.tasks[run.task!]
  if (!handler) {
    return {
      outcome: 'failed',
      exitCode: null,
      output: null,
      error: `no handler is registered for task "${run.task}"`,
    }
  }
  const timeout = AbortSignal.timeout(run.timeout_seconds * 1000)
  const signal = AbortSignal.any([o.signal, timeout])
  // The handler gets the signal; if it ignores it we stop waiting and report the abort.
  const aborted = new Promise<never>((_, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })
  aborted.catch(() => {})
  try {
    const value = await Promise.race([
      Promise.resolve().then(() =>
        handler(run.payload, {
          runId: run.run_id,
          jobId: run.job_id,
          attempt: run.attempt,
          signal,
          logger: o.logger,
        }),
      ),
      aborted,
    ])
    return {
      outcome: 'succeeded',
      exitCode: null,
      output: value === undefined ? null : tail(JSON.stringify(value)),
      error: null,
    }
  } catch (e) {
    if (timeout.aborted) {
      return {
        outcome: 'timed_out',
        exitCode: null,
        output: null,
        error: `timed out after ${run.timeout_seconds} s`,
      }
    }
    if (o.signal.aborted)
      return { outcome: 'cancelled', exitCode: null, output: null, error: 'cancelled' }
    const err = e instanceof Error ? e : new Error(String(e))
    return { outcome: 'failed', exitCode: null, output: null, error: `${err.name}: ${err.message}` }
  }
}

function tail(s: string | undefined): string | null {
  if (s === undefined) return null
  return s.length > OUTPUT_TAIL_BYTES ? s.slice(-OUTPUT_TAIL_BYTES) : s
}
