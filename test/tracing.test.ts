/**
 * Traces end to end: `pgsched start` with the real SDK exporter (OTLP/HTTP, protobuf) sending to a
 * receiver in this test that decodes the wire format. One run's story — REST submit, attempt 1
 * failing, attempt 2 succeeding — is checked span by span, in both link modes; and a job
 * submitted from SQL with a traceparent lands in the caller's trace.
 */
import { randomBytes } from 'node:crypto'

import { ROOT_CONTEXT, trace } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { mintToken } from '../src/api/tokens.ts'
import { parseTraceparent } from '../src/telemetry/tracing.ts'
import { setup, TEST_SECRET, type TestBundle } from './helpers.ts'
import { KIND, type ReceivedSpan, startOtlpReceiver } from './otlp-receiver.ts'
import { freePort, type Service, startPgsched, waitFor } from './processes.ts'

type Receiver = Awaited<ReturnType<typeof startOtlpReceiver>>

describe.each(['parent', 'link'] as const)('PGSCHED_TRACE_LINK_MODE=%s', (mode) => {
  let t: TestBundle
  let receiver: Receiver
  let pgsched: Service
  let api: string
  let token: string

  beforeAll(async () => {
    t = await setup()
    receiver = await startOtlpReceiver()
    const port = await freePort()
    api = `http://127.0.0.1:${port}`
    token = await mintToken(TEST_SECRET, 'tracer', ['submitter'], 3600)
    pgsched = await startPgsched('start', {
      DATABASE_URL: t.url,
      PGSCHED_JWT_SECRET: TEST_SECRET,
      PORT: String(port),
      PGSCHED_TRACE_LINK_MODE: mode,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_SERVICE_NAME: `pgsched-${mode}`,
      // Export spans within a fraction of a second, so the test waits little.
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_METRIC_EXPORT_INTERVAL: '1000',
    })
  }, 60_000)

  afterAll(async () => {
    await pgsched?.stop()
    await receiver?.close()
    await t?.close()
  })

  /** Spans received so far whose attribute `key` is `value`. */
  const spansWith = (key: string, value: string | number) =>
    receiver.spans.filter((s) => s.attributes[key] === value)

  it('one run: REST submit → attempt 1 failed → attempt 2 succeeded, with its command and result write', async () => {
    // A client that traces its own request: the submission continues its trace.
    const clientTrace = randomBytes(16).toString('hex')
    const clientSpan = randomBytes(8).toString('hex')
    const res = await fetch(`${api}/v1/jobs`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        traceparent: `00-${clientTrace}-${clientSpan}-01`,
      },
      body: JSON.stringify({
        name: 'flaky',
        // Fails on its first attempt only.
        command: 'test "$PGSCHED_ATTEMPT" -ge 2 || exit 3',
        max_retries: 1,
        backoff_base_seconds: 0,
        queue: 'traced',
      }),
    })
    expect(res.status).toBe(201)
    const { job_id: jobId } = (await res.json()) as { job_id: number }

    const runs = await waitFor(
      async () => {
        const r = await t.sql<{ id: string; status: string; traceparent: string | null }[]>`
          SELECT id, status, traceparent FROM pgsched.runs WHERE job_id = ${jobId}`
        return r[0]?.status === 'succeeded' && r
      },
      30_000,
      'the run to succeed on its second attempt',
    )
    const runId = Number(runs[0]!.id)
    const attempts = await waitFor(
      () => {
        const found = spansWith('pgsched.run_id', runId).filter((s) => s.kind === KIND.consumer)
        return found.length >= 2 && found
      },
      15_000,
      () => `two CONSUMER spans for run ${runId}; got ${listSpans(receiver.spans)}`,
    )

    // The HTTP request continues the client's trace; the submission is its PRODUCER child.
    const server = receiver.spans.find(
      (s) => s.kind === KIND.server && s.parentSpanId === clientSpan,
    )
    expect(server, listSpans(receiver.spans)).toBeDefined()
    expect(server!.traceId).toBe(clientTrace)
    expect(server!.name).toBe('POST /v1/jobs')
    expect(server!.attributes['http.response.status_code']).toBe(201)
    const producer = receiver.spans.find(
      (s) => s.kind === KIND.producer && s.parentSpanId === server!.spanId,
    )
    expect(producer, listSpans(receiver.spans)).toBeDefined()
    expect(producer!.name).toBe('send traced')
    expect(producer!.attributes).toMatchObject({
      'messaging.system': 'pgsched',
      'messaging.destination.name': 'traced',
      'pgsched.job_id': jobId,
    })
    // The run stores the PRODUCER span as its origin; GET /v1/runs/{id} shows it.
    expect(runs[0]!.traceparent).toBe(`00-${clientTrace}-${producer!.spanId}-01`)
    const shown = await fetch(`${api}/v1/runs/${runId}`, {
      headers: { authorization: `Bearer ${token}` },
    })
    expect(((await shown.json()) as { traceparent: string }).traceparent).toBe(runs[0]!.traceparent)

    attempts.sort(
      (a, b) => Number(a.attributes['pgsched.attempt']) - Number(b.attributes['pgsched.attempt']),
    )
    const [first, second] = attempts
    for (const [span, n, outcome] of [
      [first!, 1, 'failed'],
      [second!, 2, 'succeeded'],
    ] as const) {
      expect(span.name).toBe('process traced')
      expect(span.attributes).toMatchObject({
        'messaging.system': 'pgsched',
        'messaging.destination.name': 'traced',
        'messaging.message.id': String(runId),
        'pgsched.job_id': jobId,
        'pgsched.run_id': runId,
        'pgsched.attempt': n,
        'pgsched.outcome': outcome,
      })
      // The claim that started the attempt: one CLIENT span per claim transaction, linked.
      const claims = receiver.spans.filter(
        (s) =>
          s.kind === KIND.client &&
          s.name === 'receive traced' &&
          span.links.some((l) => l.spanId === s.spanId && l.traceId === s.traceId),
      )
      expect(claims, listSpans(receiver.spans)).toHaveLength(1)
      const claimLink = { traceId: claims[0]!.traceId, spanId: claims[0]!.spanId }
      if (mode === 'parent') {
        // One trace holds the story: each attempt is a child of the submission.
        expect(span.traceId).toBe(clientTrace)
        expect(span.parentSpanId).toBe(producer!.spanId)
        expect(span.links).toEqual([claimLink])
      } else {
        // Each attempt is a trace of its own, linked to the submission.
        expect(span.traceId).not.toBe(clientTrace)
        expect(span.parentSpanId).toBe('')
        expect(span.links).toEqual([{ traceId: clientTrace, spanId: producer!.spanId }, claimLink])
      }
      // The command and the result write are children of the attempt.
      const children = receiver.spans.filter((s) => s.parentSpanId === span.spanId)
      const exec = children.find((s) => s.attributes['pgsched.exit_code'] !== undefined)
      expect(exec, listSpans(children)).toBeDefined()
      expect(exec!.attributes['pgsched.exit_code']).toBe(n === 1 ? 3 : 0)
      expect(exec!.attributes['pgsched.sandbox']).toEqual(expect.any(String))
      await waitFor(
        () =>
          receiver.spans.some((s) => s.parentSpanId === span.spanId && s.name === 'settle traced'),
        10_000,
        () => `the result write (CLIENT) under attempt ${n}; got ${listSpans(receiver.spans)}`,
      )
    }
    expect(first!.statusCode).toBe(2) // error
    expect(second!.statusCode).not.toBe(2)
    expect(first!.service).toBe(`pgsched-${mode}`)
  }, 60_000)

  it('a job submitted from SQL with a traceparent joins the caller’s trace', async () => {
    const callerTrace = randomBytes(16).toString('hex')
    const callerSpan = randomBytes(8).toString('hex')
    const [row] = await t.sql<{ id: string }[]>`
      SELECT pgsched.submit_job(name => 'from-sql', task => 'echo', payload => '{}',
        traceparent => ${`00-${callerTrace}-${callerSpan}-01`}) AS id`
    const attempt = await waitFor(
      () =>
        spansWith('pgsched.job_id', Number(row!.id)).find((s) => s.kind === KIND.consumer) ?? false,
      20_000,
      () => `the attempt span of the SQL job; got ${listSpans(receiver.spans)}`,
    )
    if (mode === 'parent') {
      expect(attempt.traceId).toBe(callerTrace)
      expect(attempt.parentSpanId).toBe(callerSpan)
    } else {
      expect(attempt.links).toContainEqual({ traceId: callerTrace, spanId: callerSpan })
    }
  }, 30_000)
})

describe('a stored traceparent', () => {
  // The worker parses a run's traceparent itself (parseTraceparent): it must read what the W3C
  // propagator of the SDK reads, and refuse what it refuses.
  const propagator = new W3CTraceContextPropagator()
  const extract = (traceparent: string) =>
    trace.getSpanContext(
      propagator.extract(ROOT_CONTEXT, { traceparent }, { get: (c, k) => c[k], keys: Object.keys }),
    )
  const id = '4bf92f3577b34da6a3ce929d0e0e4736'
  const span = '00f067aa0ba902b7'
  it.each([
    [`00-${id}-${span}-01`],
    [`00-${id}-${span}-00`],
    [`00-${id}-${span}-09`],
    [`01-${id}-${span}-01-later-fields`],
    [` 00-${id}-${span}-01 `],
    [`00-${id}-${span}-01-extra`],
    [`ff-${id}-${span}-01`],
    [`00-${'0'.repeat(32)}-${span}-01`],
    [`00-${id}-${'0'.repeat(16)}-01`],
    [`00-${id.toUpperCase()}-${span}-01`],
    [`00-${id}-${span}`],
    [`00-${id.slice(1)}-${span}-01`],
    [''],
    ['garbage'],
  ])('%j is read as the W3C propagator reads it', (traceparent) => {
    expect(parseTraceparent(traceparent)).toEqual(extract(traceparent))
  })
})

/** The spans received, one line each, for failure messages. */
function listSpans(spans: ReceivedSpan[]): string {
  return `\n${spans
    .map(
      (s) =>
        `  ${s.traceId.slice(0, 8)} ${s.spanId} ← ${s.parentSpanId || '-'} kind ${s.kind} "${s.name}" ${JSON.stringify(s.attributes)}${s.links.length ? ` links ${JSON.stringify(s.links)}` : ''}`,
    )
    .join('\n')}`
}
