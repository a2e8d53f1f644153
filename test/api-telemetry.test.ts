/**
 * The API's traces and metrics with the real OTel SDK registered in this process: a request
 * continues its client's trace (SERVER span → PRODUCER `send {queue}`, whose id the run stores),
 * submissions are counted by outcome and reason whatever refuses them, request durations carry
 * the route template, and GET /metrics serves the Prometheus text behind bearer auth.
 */
import { randomBytes } from 'node:crypto'

import { context, metrics, propagation, SpanKind, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createApp } from '../src/api/app.ts'
import { createTokenVerifier } from '../src/api/tokens.ts'
import { silentLogger } from '../src/core/types.ts'
import { createSql } from '../src/db/client.ts'
import { setup, TEST_SECRET, type TestBundle } from './helpers.ts'
import { freePort } from './processes.ts'

const LIMIT = 5
const spans = new InMemorySpanExporter()
const prometheus = new PrometheusExporter({ preventServerStart: true })
const serializer = new PrometheusSerializer()
const metricsText = async () => serializer.serialize((await prometheus.collect()).resourceMetrics)

let t: TestBundle
let alice: string

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  trace.setGlobalTracerProvider(
    new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: spans })] }),
  )
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [prometheus] }))
  t = await setup({ rateLimitPerMinute: LIMIT, metrics: metricsText })
  alice = await t.token('alice', 'submitter')
})
afterAll(() => t.close())

/** Calls the app under test: JSON in and out. */
const request: TestBundle['request'] = (method, path, o) => t.request(method, path, o)

const later = (name: string, more: Record<string, unknown> = {}) => ({
  name,
  command: 'true',
  run_at: new Date(Date.now() + 3600_000).toISOString(),
  ...more,
})

/** A data point of a collected metric: its attributes and value. */
interface Point {
  attributes: Record<string, unknown>
  // biome-ignore lint/suspicious/noExplicitAny: a sum is a number, a histogram an object
  value: any
}

/** Every data point of the metric `name`, collected now. */
async function points(name: string): Promise<Point[]> {
  const { resourceMetrics } = await prometheus.collect()
  return resourceMetrics.scopeMetrics.flatMap((s) =>
    s.metrics
      .filter((m) => m.descriptor.name === name)
      .flatMap((m) => m.dataPoints as unknown as Point[]),
  )
}

/** The submissions counted with exactly these attributes so far. */
async function submissions(outcome: string, reason: string, via: string): Promise<number> {
  const found = (await points('pgsched.submissions')).find(
    (p) =>
      p.attributes.outcome === outcome &&
      p.attributes.reason === reason &&
      p.attributes.via === via,
  )
  return (found?.value as number | undefined) ?? 0
}

/** The counts of submissions by reason and via that `act` adds. */
async function counted(
  act: () => Promise<unknown>,
  ...keys: [outcome: string, reason: string, via: string][]
): Promise<number[]> {
  const before = await Promise.all(keys.map((k) => submissions(...k)))
  await act()
  const after = await Promise.all(keys.map((k) => submissions(...k)))
  return after.map((n, i) => n - before[i]!)
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex')
const spanOf = (s: ReadableSpan) => s.spanContext().spanId
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId

describe('traces', () => {
  it("POST /v1/jobs continues the client's trace: SERVER span → PRODUCER send {queue}, stored on the run", async () => {
    spans.reset()
    const traceId = hex(16)
    const clientSpan = hex(8)
    const res = await request('POST', '/v1/jobs', {
      token: alice,
      body: later('traced', { queue: 'mail', priority: 3 }),
      headers: { traceparent: `00-${traceId}-${clientSpan}-01` },
    })
    expect(res.status).toBe(201)

    const server = spans.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER)
    expect(server).toBeDefined()
    expect(server!.name).toBe('POST /v1/jobs')
    expect(server!.spanContext().traceId).toBe(traceId)
    expect(parentOf(server!)).toBe(clientSpan)
    expect(server!.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/v1/jobs',
      'url.path': '/v1/jobs',
      'url.scheme': 'http',
      'http.response.status_code': 201,
    })
    expect(server!.attributes['error.type']).toBeUndefined()

    const producer = spans.getFinishedSpans().find((s) => s.kind === SpanKind.PRODUCER)
    expect(producer).toBeDefined()
    expect(producer!.name).toBe('send mail')
    expect(producer!.spanContext().traceId).toBe(traceId)
    expect(parentOf(producer!)).toBe(spanOf(server!))
    expect(producer!.attributes).toMatchObject({
      'messaging.system': 'pgsched',
      'messaging.destination.name': 'mail',
      'pgsched.job_id': res.body.job_id,
      'pgsched.priority': 3,
    })

    // The run's origin is the PRODUCER span: its attempts continue or link to it.
    const [run] = await t.sql`
      SELECT coalesce(r.traceparent, j.traceparent) AS traceparent
      FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id WHERE r.job_id = ${res.body.job_id}`
    expect(run!.traceparent).toBe(`00-${traceId}-${spanOf(producer!)}-01`)
  })

  it('a batch is one PRODUCER span with its message count; every run stores it', async () => {
    spans.reset()
    const res = await request('POST', '/v1/jobs/batch', {
      token: await t.token('batcher', 'submitter'),
      body: { jobs: [later('b1', { queue: 'q1' }), later('b2', { queue: 'q1' })] },
    })
    expect(res.status).toBe(201)
    const producers = spans.getFinishedSpans().filter((s) => s.kind === SpanKind.PRODUCER)
    expect(producers).toHaveLength(1)
    expect(producers[0]!.name).toBe('send q1')
    expect(producers[0]!.attributes).toMatchObject({
      'messaging.destination.name': 'q1',
      'messaging.batch.message_count': 2,
    })
    const server = spans.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER)
    expect(server!.name).toBe('POST /v1/jobs/batch')
    expect(parentOf(producers[0]!)).toBe(spanOf(server!))
    const ids = res.body.jobs.map((j: { job_id: number }) => j.job_id)
    const stored = await t.sql`
      SELECT coalesce(r.traceparent, j.traceparent) AS traceparent
      FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id WHERE r.job_id IN ${t.sql(ids)}`
    const { traceId, spanId } = producers[0]!.spanContext()
    expect(stored.map((r) => r.traceparent)).toEqual([
      `00-${traceId}-${spanId}-01`,
      `00-${traceId}-${spanId}-01`,
    ])
  })

  it('names a span by its route template, and by its method alone when no route matched', async () => {
    spans.reset()
    const { body: job } = await request('POST', '/v1/jobs', { token: alice, body: later('named') })
    await request('GET', `/v1/jobs/${job.job_id}`, { token: alice })
    await request('GET', '/no/such/route')
    const names = spans
      .getFinishedSpans()
      .filter((s) => s.kind === SpanKind.SERVER)
      .map((s) => s.name)
    expect(names).toEqual(['POST /v1/jobs', 'GET /v1/jobs/{id}', 'GET'])
  })
})

describe('submission metrics', () => {
  it('counts accepted submissions, a batch by its jobs', async () => {
    const token = await t.token('counter', 'submitter')
    expect(
      await counted(
        async () => {
          expect((await request('POST', '/v1/jobs', { token, body: later('one') })).status).toBe(
            201,
          )
          const batch = { jobs: [later('b1'), later('b2'), later('b3')] }
          expect((await request('POST', '/v1/jobs/batch', { token, body: batch })).status).toBe(201)
        },
        ['accepted', 'ok', 'rest'],
        ['accepted', 'ok', 'batch'],
      ),
    ).toEqual([1, 3])
  })

  it('counts validation refusals: the request schema (400), in a batch each job', async () => {
    expect(
      await counted(
        async () => {
          const missing = await request('POST', '/v1/jobs', { token: alice, body: { x: 1 } })
          expect(missing.status).toBe(400)
          const batch = { jobs: [later('fine'), { name: 'no command or task', priority: 99 }] }
          const bad = await request('POST', '/v1/jobs/batch', { token: alice, body: batch })
          expect(bad.status).toBe(400)
        },
        ['refused', 'validation', 'rest'],
        ['refused', 'validation', 'batch'],
        ['accepted', 'ok', 'batch'],
      ),
    ).toEqual([1, 2, 0])
  })

  it('counts refusals by authentication and role (401, 403)', async () => {
    const viewer = await t.token('vera', 'viewer')
    expect(
      await counted(async () => {
        expect((await request('POST', '/v1/jobs', { body: later('anon') })).status).toBe(401)
        expect(
          (await request('POST', '/v1/jobs', { token: viewer, body: later('v') })).status,
        ).toBe(403)
      }, ['refused', 'auth', 'rest']),
    ).toEqual([2])
  })

  it('counts a refusal by the rate limit (429)', async () => {
    const token = await t.token('greedy', 'submitter')
    expect(
      await counted(
        async () => {
          for (let i = 0; i < LIMIT; i++) {
            expect(
              (await request('POST', '/v1/jobs', { token, body: later(`g${i}`) })).status,
            ).toBe(201)
          }
          const refused = await request('POST', '/v1/jobs', { token, body: later('too many') })
          expect(refused.status).toBe(429)
        },
        ['accepted', 'ok', 'rest'],
        ['refused', 'rate_limit', 'rest'],
      ),
    ).toEqual([LIMIT, 1])
  })

  it('counts refusals at degradation level 4 (503) apart from an unavailable database', async () => {
    const admin = await t.token('root', 'admin')
    const set = (level: number) =>
      request('PUT', '/v1/admin/degradation', { token: admin, body: { mode: 'manual', level } })
    expect((await set(4)).status).toBe(200)
    try {
      expect(
        await counted(
          async () => {
            const one = await request('POST', '/v1/jobs', { token: alice, body: later('d') })
            expect(one.status).toBe(503)
            const batch = { jobs: [later('d1'), later('d2')] }
            expect(
              (await request('POST', '/v1/jobs/batch', { token: alice, body: batch })).status,
            ).toBe(503)
          },
          ['refused', 'degradation', 'rest'],
          ['refused', 'degradation', 'batch'],
          ['refused', 'unavailable', 'rest'],
        ),
      ).toEqual([1, 2, 0])
    } finally {
      expect((await set(0)).status).toBe(200)
    }
  })
})

describe('HTTP metrics', () => {
  it('records request durations by route template, never by the raw path', async () => {
    const { body: job } = await request('POST', '/v1/jobs', { token: alice, body: later('timed') })
    expect((await request('GET', `/v1/jobs/${job.job_id}`, { token: alice })).status).toBe(200)
    // Refused by authentication, before the route's handler: still its route.
    expect((await request('GET', `/v1/jobs/${job.job_id}`)).status).toBe(401)
    expect((await request('GET', '/no/such/route')).status).toBe(404)

    const recorded = await points('http.server.request.duration')
    const routes = new Set(recorded.map((p) => p.attributes['http.route']))
    expect(routes).toContain('/v1/jobs/{id}')
    expect([...routes].filter((r) => String(r).includes(String(job.job_id)))).toEqual([])
    const got = recorded.find(
      (p) =>
        p.attributes['http.route'] === '/v1/jobs/{id}' &&
        p.attributes['http.request.method'] === 'GET' &&
        p.attributes['http.response.status_code'] === 200,
    )
    expect(got?.value.count).toBeGreaterThanOrEqual(1)
    expect(got?.value.sum).toBeGreaterThan(0)
    // Durations are in seconds: an in-process request takes well under a minute.
    expect(got?.value.max).toBeLessThan(60)
    const refused = recorded.find(
      (p) =>
        p.attributes['http.route'] === '/v1/jobs/{id}' &&
        p.attributes['http.response.status_code'] === 401,
    )
    expect(refused?.value.count).toBeGreaterThanOrEqual(1)
    const unmatched = recorded.find(
      (p) => p.attributes['http.response.status_code'] === 404 && !('http.route' in p.attributes),
    )
    expect(unmatched?.value.count).toBeGreaterThanOrEqual(1)
  })
})

describe('GET /metrics', () => {
  it('needs a token, and answers any role with the Prometheus text', async () => {
    const anon = await request('GET', '/metrics')
    expect(anon.status).toBe(401)
    expect(anon.headers.get('content-type')).toContain('application/problem+json')
    for (const role of ['viewer', 'submitter', 'admin'] as const) {
      const res = await request('GET', '/metrics', { token: await t.token('scraper', role) })
      expect(res.status, role).toBe(200)
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8')
      expect(res.text).toMatch(/^pgsched_submissions_total\{[^}]*reason="ok"[^}]*\} \d+/m)
      expect(res.text).toMatch(/^pgsched_breaker_state\w*\{[^}]*breaker="api_database"[^}]*\} 0/m)
      expect(res.text).toMatch(/^http_server_request_duration\w*_bucket\{/m)
    }
  })

  it('is a 404 problem when the app is given no metrics', async () => {
    const bare = createApp({
      sql: t.sql,
      verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
      logger: silentLogger,
    })
    const res = await bare.request('/metrics', { headers: { authorization: `Bearer ${alice}` } })
    expect(res.status).toBe(404)
    expect(await res.json()).toMatchObject({ type: 'urn:pgsched:problem:not_found' })
  })

  it('answers without the database, and shows the open breaker and the refusals it caused', async () => {
    // Nothing listens on this port: every connection attempt is refused.
    const sql = createSql(`postgres://nobody@127.0.0.1:${await freePort()}/none`, { max: 1 })
    try {
      const away = createApp({
        sql,
        verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
        logger: silentLogger,
        metrics: metricsText,
      })
      const auth = { authorization: `Bearer ${alice}` }
      const scrape = async () => {
        const res = await away.request('/metrics', { headers: auth })
        expect(res.status).toBe(200)
        return res.text()
      }
      expect(await scrape()).toContain('pgsched_submissions_total')
      expect(
        await counted(async () => {
          // Three failures in a row open the circuit (middleware/breaker.ts).
          for (let i = 0; i < 4; i++) {
            const res = await away.request('/v1/jobs', {
              method: 'POST',
              headers: { ...auth, 'content-type': 'application/json' },
              body: JSON.stringify(later(`away${i}`)),
            })
            expect(res.status).toBe(503)
          }
        }, ['refused', 'unavailable', 'rest']),
      ).toEqual([4])
      // This app's breaker reports last, so its reading is the one shown.
      expect(await scrape()).toMatch(
        /^pgsched_breaker_state\w*\{[^}]*breaker="api_database"[^}]*\} 2$/m,
      )
    } finally {
      await sql.end()
    }
  })
})
