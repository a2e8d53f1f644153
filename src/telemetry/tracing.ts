/**
 * @module Tracing helpers for the portable layers: only @opentelemetry/api. Without an SDK
 * registered (see node-sdk.ts) every call is a cheap no-op.
 *
 * Spans follow the OTel messaging conventions where they fit: the name is
 * `{operation} {destination}` (destination: the job's queue, or `default`), a submission is a
 * PRODUCER span (`send`), a worker's round trips to the database are CLIENT spans (`receive` for
 * starting a group of attempts in one transaction, which each attempt links to; `settle` for
 * writing an attempt's result), an attempt's execution is a CONSUMER span
 * (`process`). A run stores the traceparent of the span that made it; the attempt either continues
 * that trace (`parent`) or starts its own and links to it (`link`, the default; see
 * `TraceLinkMode`).
 */
import {
  type Attributes,
  type Context,
  context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api'

/** The tracer of pgsched. */
const tracer = trace.getTracer('pgsched')

/**
 * How an attempt's span relates to the span that submitted its run. `link` (the default, as River
 * and Oban do) starts a trace per attempt that links to the submission: a cron job's thousandth
 * run or a retry three days later is not one endless trace, and backends that sample per trace
 * keep an attempt whole. `parent` makes every attempt a child of the submission: one trace holds
 * the whole story, at the cost of traces that last as long as the job's retries.
 */
export type TraceLinkMode = 'link' | 'parent'

/** The queue as spans and metrics name it: the job's queue, or `default` for none. */
export function destination(queue: string | null | undefined): string {
  return queue || 'default'
}

/** Attributes shared by every span of pgsched's messaging spans. */
export function messagingAttributes(queue: string | null | undefined): Attributes {
  return { 'messaging.system': 'pgsched', 'messaging.destination.name': destination(queue) }
}

/** The W3C traceparent of the active span, to store on a run; null when not tracing. */
export function currentTraceparent(ctx: Context = context.active()): string | null {
  const carrier: Record<string, string> = {}
  propagation.inject(ctx, carrier)
  return carrier.traceparent ?? null
}

/** The ids of the active span, for log lines; undefined when no span is recording. */
export function activeTraceIds(): { trace_id: string; span_id: string } | undefined {
  const span = trace.getActiveSpan()
  const sc = span?.spanContext()
  if (!sc || !trace.isSpanContextValid(sc)) return undefined
  return { trace_id: sc.traceId, span_id: sc.spanId }
}

/** What a span is, where it sits, and how it relates to a stored traceparent. */
export interface SpanOptions {
  kind?: SpanKind
  attributes?: Attributes
  /** A stored W3C traceparent: the span's parent (`parent`) or a link (`link`). */
  from?: string | null
  /** How `from` is used. @default 'parent' */
  mode?: TraceLinkMode
  /** The context the span starts in (without `from`, or `from` in `link` mode). @default the active one */
  parent?: Context
  /** Start the span at this instant (e.g. a tick's scheduled time). */
  startTime?: Date
  /** Further spans this one is linked to (e.g. the batch operation it took part in). */
  links?: Link[]
}

/**
 * A W3C traceparent: version (not ff), trace id, parent span id, flags; a later version may add
 * fields. The expression of @opentelemetry/core's W3CTraceContextPropagator.
 */
const TRACEPARENT =
  /^\s?((?!ff)[\da-f]{2})-((?![0]{32})[\da-f]{32})-((?![0]{16})[\da-f]{16})-([\da-f]{2})(-.*)?\s?$/

/**
 * The span context a stored traceparent names; undefined when it is not one. Parsed here rather
 * than through `propagation.extract` (a carrier and a context per call, on every attempt): a
 * run's traceparent is W3C's whatever propagator the process is configured with.
 */
export function parseTraceparent(value: string): SpanContext | undefined {
  const m = TRACEPARENT.exec(value)
  if (!m || (m[1] === '00' && m[5])) return undefined
  return { traceId: m[2]!, spanId: m[3]!, traceFlags: Number.parseInt(m[4]!, 16), isRemote: true }
}

/**
 * Runs `fn` in a new active span and ends it; an error thrown marks the span failed and is
 * rethrown. With `from` in `link` mode the span is a new root linked to that context.
 */
export function inSpan<T>(
  name: string,
  options: SpanOptions,
  fn: (span: Span) => Promise<T> | T,
): Promise<T> {
  let parent = options.parent ?? context.active()
  let links = options.links
  let root = false
  const stored = options.from ? parseTraceparent(options.from) : undefined
  if (stored) {
    if (options.mode === 'link') {
      links = links?.length ? [{ context: stored }, ...links] : [{ context: stored }]
      root = true
    } else parent = trace.setSpanContext(ROOT_CONTEXT, stored)
  }
  const span = tracer.startSpan(
    name,
    { kind: options.kind ?? SpanKind.INTERNAL, links, startTime: options.startTime, root },
    parent,
  )
  // Set once the span exists rather than passed to startSpan, which checks each attribute twice
  // (once for the sampler, once for the span): the samplers the OTEL_TRACES_SAMPLER variable
  // chooses from read none of them, and an unsampled span is spared them.
  if (options.attributes && span.isRecording()) span.setAttributes(options.attributes)
  return context.with(trace.setSpan(parent, span), runInSpan<T>, undefined, span, fn)
}

async function runInSpan<T>(span: Span, fn: (span: Span) => Promise<T> | T): Promise<T> {
  try {
    return await fn(span)
  } catch (e) {
    span.recordException(e as Error)
    span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error)?.message })
    throw e
  } finally {
    span.end()
  }
}

export type { Span }
export { SpanKind, SpanStatusCode }
