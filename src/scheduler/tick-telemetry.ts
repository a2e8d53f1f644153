/**
 * @module The ticker's traces and metrics: a span per fired cron tick, whose traceparent the
 * tick's run stores, and the tick counters. Portable: only @opentelemetry/api, through the
 * telemetry helpers. Without an SDK the spans are non-recording, no traceparent is made, and
 * fire_ticks stores the job's traceparent as it always did.
 *
 * The span is a PRODUCER named `send {queue}`, as a REST submission's is: a tick does what a
 * submission does (it puts a run on the queue), so backends that group spans by operation see
 * every producer as `send`, and what tells a tick apart is the standard FaaS trigger attributes
 * (`faas.trigger=timer`, `faas.cron`, `faas.time`). The FaaS conventions make the timer-triggered
 * span the function's own invocation; here the invocation is the attempt (`process {queue}`),
 * which links to or continues the tick's span like any run's.
 */
import { type Attributes, type Link, ROOT_CONTEXT, type Span, trace } from '@opentelemetry/api'
import { CronExpressionParser } from 'cron-parser'

import type { TickPlan } from '../core/cron.ts'
import type { Sql } from '../db/client.ts'
import { type DueTickJob, jobTickRuns } from '../db/queries/jobs.ts'
import { instruments } from '../telemetry/metrics.ts'
import {
  currentTraceparent,
  destination,
  messagingAttributes,
  SpanKind,
  SpanStatusCode,
} from '../telemetry/tracing.ts'

const tracer = trace.getTracer('pgsched')

/**
 * Most cron steps walked to count the ticks a leader missed; past it the count is extrapolated
 * from the steps walked, so a per-second schedule after a week away costs a hundred steps,
 * not 600,000.
 */
const MISSED_STEPS_MAX = 100

/** A tick about to fire, with its span if tracing. */
interface FiringTick {
  job: DueTickJob
  tick: Date
  missed: number
  span: Span | undefined
  traceparent: string | null
}

/** The ticks of one batch, from planning to after fire_ticks. */
export class TickBatchTelemetry {
  readonly #ticks: FiringTick[] = []
  // Jobs of one batch sharing a schedule and a planned tick missed the same ticks.
  readonly #missed = new Map<string, number>()

  /**
   * Records a planned tick that will fire, starts its span, and returns its traceparent (null
   * when not tracing). `plan.expected` is the tick the leader planned to fire; the ticks from it
   * up to `plan.tick` (the latest due one, which fires) were skipped.
   */
  add(job: DueTickJob, plan: TickPlan): string | null {
    if (plan.tick === null) return null
    const missed = this.#countMissed(job, plan.expected, plan.tick)
    const lateness = (job.now.getTime() - plan.tick.getTime()) / 1000
    const attributes: Attributes = {
      ...messagingAttributes(job.queue),
      'messaging.operation.type': 'send',
      'faas.trigger': 'timer',
      'faas.cron': job.schedule,
      'faas.time': plan.tick.toISOString(),
      'pgsched.job_id': job.id,
      'pgsched.timezone': job.timezone,
      'pgsched.tick.lateness': lateness,
      'pgsched.ticks.missed': missed,
    }
    const links: Link[] = []
    const submitted = job.traceparent && spanContextOf(job.traceparent)
    if (submitted) links.push({ context: submitted })
    // A trace per tick: a root span, linked to the job's submission rather than its child, so a
    // schedule's thousandth tick is not one more span of a trace that never ends.
    const span = tracer.startSpan(
      `send ${destination(job.queue)}`,
      { kind: SpanKind.PRODUCER, attributes, links, root: true },
      ROOT_CONTEXT,
    )
    const traceparent = trace.isSpanContextValid(span.spanContext())
      ? currentTraceparent(trace.setSpan(ROOT_CONTEXT, span))
      : null
    this.#ticks.push({ job, tick: plan.tick, missed, span, traceparent })
    return traceparent
  }

  /**
   * After fire_ticks, in its transaction: counts the ticks, gives each recording span the run
   * it made (a run holding another traceparent was made by someone else: a second leader, or
   * trigger_job at the same instant) and ends the spans.
   */
  async fired(sql: Sql, created: number): Promise<void> {
    const m = instruments()
    if (created > 0) m.ticksFired.add(created)
    for (const t of this.#ticks) {
      m.tickLateness.record(Math.max(0, (t.job.now.getTime() - t.tick.getTime()) / 1000))
      if (t.missed > 0) m.ticksMissed.add(t.missed)
    }
    const traced = this.#ticks.filter((t) => t.traceparent !== null && t.span?.isRecording())
    if (traced.length > 0) {
      const runs = await jobTickRuns(
        sql,
        traced.map((t) => ({ jobId: t.job.id, tick: t.tick })),
      )
      const byTraceparent = new Map(runs.map((r) => [r.traceparent, r.run_id]))
      for (const t of traced) {
        const runId = byTraceparent.get(t.traceparent)
        if (runId === undefined) {
          t.span!.setAttribute('pgsched.tick.fired', false)
          continue
        }
        t.span!.setAttributes({
          'pgsched.run_id': runId,
          'messaging.message.id': String(runId),
        })
      }
    }
    this.end()
  }

  /** Ends every span not ended yet; with `error`, marks them failed (the batch rolled back). */
  end(error?: unknown): void {
    for (const t of this.#ticks) {
      if (!t.span) continue
      if (error !== undefined) {
        t.span.recordException(error as Error)
        t.span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message })
      }
      t.span.end()
      t.span = undefined
    }
  }

  #countMissed(job: DueTickJob, expected: Date | null, tick: Date): number {
    if (expected === null || expected.getTime() >= tick.getTime()) return 0
    const key = `${job.schedule}\u0000${job.timezone}\u0000${expected.getTime()}\u0000${tick.getTime()}`
    let n = this.#missed.get(key)
    if (n === undefined) {
      n = countTicks(job.schedule, job.timezone, expected, tick)
      this.#missed.set(key, n)
    }
    return n
  }
}

/**
 * The ticks of a schedule in [from, to): `from` is a tick. Walks at most MISSED_STEPS_MAX steps,
 * then extrapolates at the rate walked.
 */
export function countTicks(schedule: string, timezone: string, from: Date, to: Date): number {
  if (from.getTime() >= to.getTime()) return 0
  // One iterator, not cronNext per step: parsing the expression is most of a step's cost. Its
  // next() is what cronNext (the planner) calls.
  const ticks = CronExpressionParser.parse(schedule, { tz: timezone, currentDate: from })
  let n = 1 // `from` itself
  let at = from
  for (;;) {
    if (n === MISSED_STEPS_MAX) {
      // n - 1 intervals took at - from: the same rate over the whole span.
      return Math.round(
        ((n - 1) * (to.getTime() - from.getTime())) / (at.getTime() - from.getTime()),
      )
    }
    at = ticks.next().toDate()
    if (at.getTime() >= to.getTime()) return n
    n++
  }
}

function spanContextOf(traceparent: string) {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(traceparent)
  if (!m) return undefined
  const context = { traceId: m[1]!, spanId: m[2]!, traceFlags: Number.parseInt(m[3]!, 16) }
  return trace.isSpanContextValid(context) ? { ...context, isRemote: true } : undefined
}
