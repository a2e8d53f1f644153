/**
 * @module Tracing helpers for the portable layers: only @opentelemetry/api. Without an SDK
 * registered (see node-sdk.ts) every call is a cheap no-op.
 */
import { context, propagation, type Span, SpanStatusCode, trace } from '@opentelemetry/api'

/** The tracer of pgsched; span names look like `pgsched.<area>.<op>`. */
const tracer = trace.getTracer('pgsched')

/** The W3C traceparent of the active span, to store on a run; null when not tracing. */
export function currentTraceparent(): string | null {
  const carrier: Record<string, string> = {}
  propagation.inject(context.active(), carrier)
  return carrier.traceparent ?? null
}

/** Runs `fn` in a span that continues the trace of a stored traceparent (null: the active one). */
export function withSpanFrom<T>(
  name: string,
  traceparent: string | null,
  attributes: Record<string, string | number>,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = traceparent
    ? propagation.extract(context.active(), { traceparent })
    : context.active()
  return tracer.startActiveSpan(name, { attributes }, parent, async (span) => {
    try {
      return await fn(span)
    } catch (e) {
      span.recordException(e as Error)
      span.setStatus({ code: SpanStatusCode.ERROR })
      throw e
    } finally {
      span.end()
    }
  })
}
