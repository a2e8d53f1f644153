/**
 * @module Traces and metrics of the HTTP API, after the OTel HTTP semantic conventions: every
 * request is a SERVER span named `{method} {route}` that continues the client's trace (a W3C
 * `traceparent` header), and its duration is recorded in `http.server.request.duration`. The route
 * is the template a request matched (`/v1/jobs/{id}`), never the path with its ids, so both stay
 * low-cardinality.
 */
import {
  type Attributes,
  context,
  propagation,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from '@opentelemetry/api'
import type { Context, MiddlewareHandler } from 'hono'
import { matchedRoutes } from 'hono/route'

import { instruments } from '../../telemetry/metrics.ts'

const tracer = trace.getTracer('pgsched')

/** Reads propagation headers (traceparent, tracestate) from a Fetch Headers object. */
const headersGetter: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
}

/** The methods the conventions name; any other is `_OTHER`, so a client cannot add series. */
const KNOWN_METHODS = new Set([
  'CONNECT',
  'DELETE',
  'GET',
  'HEAD',
  'OPTIONS',
  'PATCH',
  'POST',
  'PUT',
  'TRACE',
])

/** Hono's method of `app.use` middleware: it matches every route, so it names none. */
const ANY_METHOD = 'ALL'

/**
 * The route template a request matched, in OpenAPI's spelling (`/v1/jobs/{id}`); undefined when
 * no route matched (only middleware did). It is the first route handler matched, the one that
 * answers, or would have had a middleware before it (authentication, say) not refused.
 */
function routeTemplate(c: Context): string | undefined {
  const route = matchedRoutes(c).find((r) => r.method !== ANY_METHOD)
  // Hono spells a parameter `:id` or `:id{[0-9]+}`; OpenAPI and the conventions' examples `{id}`.
  return route?.path.replace(/:(\w+)(\{[^}]*\})?\??/g, '{$1}')
}

/**
 * The middleware; register it first, so the span and the duration cover every other middleware.
 * Errors never reach it: Hono's onError has already made them a response.
 */
export function httpTelemetry(): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now()
    const original = c.req.method
    const method = KNOWN_METHODS.has(original) ? original : '_OTHER'
    const parent = propagation.extract(context.active(), c.req.raw.headers, headersGetter)
    const span = tracer.startSpan(
      method === '_OTHER' ? 'HTTP' : method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': method,
          ...(method === '_OTHER' ? { 'http.request.method_original': original } : {}),
          'url.path': c.req.path,
          'url.scheme': c.req.url.slice(0, c.req.url.indexOf(':')),
        },
      },
      parent,
    )
    let thrown = false
    try {
      await context.with(trace.setSpan(parent, span), next)
    } catch (e) {
      // Only a non-Error throw gets past Hono's onError; the server answers it with a 500.
      thrown = true
      throw e
    } finally {
      const status = thrown ? 500 : c.res.status
      const route = routeTemplate(c)
      const attributes: Attributes = {
        'http.request.method': method,
        'http.response.status_code': status,
      }
      if (route !== undefined) {
        attributes['http.route'] = route
        span.updateName(`${method === '_OTHER' ? 'HTTP' : method} ${route}`)
      }
      if (status >= 500) {
        attributes['error.type'] = String(status)
        span.setStatus({ code: SpanStatusCode.ERROR })
      }
      span.setAttributes(attributes)
      span.end()
      instruments().httpServerDuration.record((performance.now() - started) / 1000, attributes)
    }
  }
}

/** Why a submission was refused, or `ok`: the `reason` of `pgsched.submissions`. */
type SubmissionReason =
  | 'ok'
  | 'validation'
  | 'auth'
  | 'rate_limit'
  | 'degradation'
  | 'overload'
  | 'unavailable'
  | 'internal'

// The refusals a status cannot tell apart (every 503 looks alike), noted where they are made.
const noted = new WeakMap<Context, SubmissionReason>()

/**
 * Notes why this request is being refused, where the status alone would not say: `degradation`
 * (refused at the degradation level in force) or `overload` (the request ran out of time).
 */
export function noteRefusal(c: Context, reason: 'degradation' | 'overload'): void {
  noted.set(c, reason)
}

/** The reason a submission answered with `status` was accepted or refused. */
function reasonOf(c: Context, status: number): SubmissionReason {
  if (status < 400) return 'ok'
  const reason = noted.get(c)
  if (reason) return reason
  if (status === 401 || status === 403) return 'auth'
  if (status === 429) return 'rate_limit'
  if (status === 503) return 'unavailable'
  // Any other client error is about what was sent: bad JSON, a field, a size, a missing job.
  if (status < 500) return 'validation'
  return 'internal'
}

/**
 * How many jobs a batch request carried: the validated batch's length; a batch refused before
 * validation passed counts the jobs of its body if it was read and is JSON, else one (a body that
 * was never read, as for a request refused at authentication, is not read for a metric).
 */
async function batchSize(c: Context): Promise<number> {
  const valid = (c.req.valid as (target: 'json') => { jobs?: unknown } | undefined)('json')
  if (Array.isArray(valid?.jobs)) return valid.jobs.length
  if (Object.keys(c.req.bodyCache).length === 0) return 1
  try {
    const body = (await c.req.json()) as { jobs?: unknown }
    return Array.isArray(body?.jobs) && body.jobs.length > 0 ? body.jobs.length : 1
  } catch {
    return 1
  }
}

/**
 * Counts submissions (`pgsched.submissions`) by outcome and reason, from the answer: every path
 * to a refusal (header and body limits, authentication, roles, request validation, the rate
 * limit, degradation, the database breaker, the SQL API's own checks) ends in a status here.
 * Register it on a submission route before any middleware that can refuse; it counts POSTs only.
 */
export function submissionMetrics(via: 'rest' | 'batch'): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== 'POST') return next()
    let status = 500
    try {
      await next()
      status = c.res.status
    } finally {
      const reason = reasonOf(c, status)
      const n = via === 'batch' ? await batchSize(c) : 1
      instruments().submissions.add(n, {
        outcome: reason === 'ok' ? 'accepted' : 'refused',
        reason,
        via,
      })
    }
  }
}
