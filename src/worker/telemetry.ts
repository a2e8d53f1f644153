/**
 * @module The worker's spans and metrics of an attempt. An attempt is one CONSUMER span,
 * `process {queue}`, from the claim to the end of its execution; it continues the run's stored
 * traceparent as its parent or links to it (`TraceLinkMode`). Its children tell the attempt's
 * story in order: `exec` (a command, from spawn to exit) and `settle {queue}` (the result write,
 * done in the background after the slot is freed, so it may end after its parent).
 *
 * The claim is one CLIENT span per transaction, `receive {queue}`, as the messaging conventions
 * model a batch receive: the worker starts the attempts that arrive together in one statement
 * (group commit), and each attempt's span links to the claim it was started by. A claim span per
 * attempt would repeat the same round trip for each of them, and it was a third of the spans
 * the worker sent: with it, telemetry took 14 % of the end-to-end drain (bench, workload 6).
 */
import { type Attributes, type Context, context, type Link } from '@opentelemetry/api'

import type { AttemptResult, StartedRun } from '../db/queries/runs.ts'
import { instruments, priorityBand } from '../telemetry/metrics.ts'
import {
  destination,
  inSpan,
  messagingAttributes,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TraceLinkMode,
} from '../telemetry/tracing.ts'

/** The attributes every span of an attempt carries. */
export function attemptAttributes(run: StartedRun): Attributes {
  return {
    'messaging.system': 'pgsched',
    'messaging.destination.name': destination(run.queue),
    'messaging.message.id': String(run.run_id),
    'pgsched.job_id': run.job_id,
    'pgsched.run_id': run.run_id,
    'pgsched.attempt': run.attempt,
    'pgsched.priority': run.priority,
  }
}

/** The claim span each started attempt was started in (see `claimSpan`). */
const claims = new WeakMap<StartedRun, Link[]>()

/** A link's attributes from an attempt's span to its claim's. */
const CLAIM_LINK: Attributes = { 'messaging.operation.type': 'receive' }

/**
 * Starts a group of attempts (`start`, one transaction) in a `receive` span: named by the queue
 * when the group has one, with the number of attempts it started. Each started attempt remembers
 * the span, for its `process` span to link to.
 */
export function claimSpan(
  start: () => Promise<(StartedRun | undefined)[]>,
): Promise<(StartedRun | undefined)[]> {
  return inSpan('receive', { kind: SpanKind.CLIENT }, async (span) => {
    const runs = await start()
    if (!span.isRecording()) return runs
    // One link for the group: the SDK copies what it keeps of a link.
    const claim = [{ context: span.spanContext(), attributes: CLAIM_LINK }]
    let count = 0
    let queue: string | undefined
    let mixed = false
    for (const run of runs) {
      if (run === undefined) continue
      count++
      claims.set(run, claim)
      const q = destination(run.queue)
      if (queue === undefined) queue = q
      else if (q !== queue) mixed = true
    }
    span.setAttribute('messaging.system', 'pgsched')
    span.setAttribute('messaging.operation.type', 'receive')
    span.setAttribute('messaging.batch.message_count', count)
    if (queue !== undefined && !mixed) {
      span.updateName(`receive ${queue}`)
      span.setAttribute('messaging.destination.name', queue)
    }
    return runs
  })
}

/** Outcomes that make an attempt's span an error: the job's own failures, not a stop from outside. */
const FAILED_OUTCOMES: ReadonlySet<string> = new Set(['failed', 'timed_out', 'lost'])

/** What `processSpan` learns from the attempt it wraps. */
export interface AttemptEnd {
  result: AttemptResult
  /** The outcome the span shows: the result's, or `lost` when the run was rescued from this worker. */
  outcome: string
  /** The sandbox a command ran in (its description); undefined for a task. */
  sandbox?: string
}

/**
 * Runs an attempt in its `process {queue}` span, started at `claimStart` (when the attempt asked
 * to be started) and linked to its claim span. Returns the attempt's end and the span's context,
 * under which its result write is traced later.
 */
export async function processSpan(
  run: StartedRun,
  o: { mode: TraceLinkMode; claimStart: Date },
  execute: () => Promise<AttemptEnd>,
): Promise<AttemptEnd & { context: Context }> {
  return inSpan(
    `process ${destination(run.queue)}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: attemptAttributes(run),
      from: run.traceparent,
      mode: o.mode,
      startTime: o.claimStart,
      links: claims.get(run),
    },
    async (span) => {
      const end = await execute()
      const { result, outcome, sandbox } = end
      span.setAttribute('pgsched.outcome', outcome)
      if (sandbox !== undefined) {
        span.setAttribute('pgsched.sandbox', sandbox)
        if (result.exitCode !== null) span.setAttribute('pgsched.exit_code', result.exitCode)
      }
      if (FAILED_OUTCOMES.has(outcome)) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: result.error ?? outcome })
      }
      return { result, outcome, sandbox, context: context.active() }
    },
  )
}

/** Runs a command's execution in its `exec` span (INTERNAL), a child of the active attempt. */
export function execSpan<
  T extends { outcome: string; exitCode: number | null; signal: string | null },
>(run: StartedRun, sandbox: string, fn: () => Promise<T>): Promise<T> {
  return inSpan(
    'exec',
    {
      kind: SpanKind.INTERNAL,
      attributes: { ...attemptAttributes(run), 'pgsched.sandbox': sandbox },
    },
    async (span: Span) => {
      const r = await fn()
      span.setAttribute('pgsched.outcome', r.outcome)
      if (r.exitCode !== null) span.setAttribute('pgsched.exit_code', r.exitCode)
      if (r.signal !== null) span.setAttribute('pgsched.signal', r.signal)
      if (FAILED_OUTCOMES.has(r.outcome)) {
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: r.signal ? `killed by ${r.signal}` : `exited with code ${r.exitCode}`,
        })
      }
      return r
    },
  )
}

/**
 * Writes an attempt's result in its `settle {queue}` span (CLIENT), a child of the attempt's
 * span `parent`; `write` returns the run's new status (null: the attempt was no longer current).
 */
export function settleSpan(
  run: StartedRun,
  parent: Context,
  write: () => Promise<string | null>,
): Promise<string | null> {
  return inSpan(
    `settle ${destination(run.queue)}`,
    // The job, run and attempt are on the parent; the write's own outcome is added below.
    { kind: SpanKind.CLIENT, attributes: messagingAttributes(run.queue), parent },
    async (span) => {
      const status = await write()
      span.setAttribute('pgsched.run_status', status ?? 'dropped')
      return status
    },
  )
}

/** Records a started attempt's queue wait: from when it became due to when it started. */
export function recordQueueWait(run: StartedRun): void {
  const seconds = (run.started_at.getTime() - run.available_at.getTime()) / 1000
  instruments().queueWait.record(Math.max(0, seconds), {
    queue: destination(run.queue),
    priority_band: priorityBand(run.priority),
  })
}

/** Records an attempt the worker finished: its outcome and how long it ran. */
export function recordAttempt(run: StartedRun, outcome: string, seconds: number): void {
  const m = instruments()
  const attributes = { outcome, queue: destination(run.queue) }
  m.attemptsFinished.add(1, attributes)
  m.attemptDuration.record(seconds, attributes)
}

/** Final statuses of a run, as run_finish returns them. */
const FINAL_STATUSES: ReadonlySet<string> = new Set(['succeeded', 'dead', 'cancelled'])

/** Records a run's new status after its result was written: final ones, and dead letters. */
export function recordRunStatus(queue: string | null, status: string | null): void {
  if (status === null || !FINAL_STATUSES.has(status)) return
  const m = instruments()
  m.runsFinished.add(1, { status, queue: destination(queue) })
  if (status === 'dead') m.deadLetters.add(1, { queue: destination(queue) })
}
