/**
 * The worker's traces and metrics, in process with the real OpenTelemetry SDK (in-memory span
 * exporter, a metric reader collected on demand): a task that succeeds, a command that fails,
 * is retried once and is dead-lettered, and a command that succeeds, in both trace link modes.
 * Each attempt is a `process {queue}` CONSUMER span under (parent) or linked to (link) the
 * submitter's traceparent, with its command and result write as children and a link to the
 * claim (one `receive` CLIENT span per claim transaction); the metrics count what happened.
 */
import { context, metrics, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import {
  AggregationTemporality,
  type DataPoint,
  MeterProvider,
  MetricReader,
} from '@opentelemetry/sdk-metrics'
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { Worker } from '../src/worker/index.ts'
import { setup, signal, type TestBundle, waitFor } from './helpers.ts'

/** A reader the test collects from when it wants to look. */
class TestReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

const spans = new InMemorySpanExporter()
const tracerProvider = new TracerProvider({
  spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
})

beforeAll(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  trace.setGlobalTracerProvider(tracerProvider)
})
afterAll(async () => {
  await tracerProvider.shutdown()
  trace.disable()
  propagation.disable()
  context.disable()
  metrics.disable()
})

/** A traceparent of a caller's span, as an instrumented application would pass it. */
function callerTraceparent(): { traceparent: string; traceId: string; spanId: string } {
  const hex = (n: number) =>
    Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) =>
      b.toString(16).padStart(2, '0'),
    ).join('')
  const traceId = hex(16)
  const spanId = hex(8)
  return { traceparent: `00-${traceId}-${spanId}-01`, traceId, spanId }
}

const idOf = (s: ReadableSpan) => s.spanContext().spanId
const traceOf = (s: ReadableSpan) => s.spanContext().traceId

describe.each(['link', 'parent'] as const)('traceLinkMode %s', (mode) => {
  let t: TestBundle
  let worker: Worker
  let token: string
  const reader = new TestReader()
  // Gauges are read as deltas: a cumulative reader goes on showing the last value of an attribute
  // set no longer observed, where a scrape of a process would show a stopped worker's as gone.
  const gaugeReader = new TestReader({
    aggregationTemporalitySelector: () => AggregationTemporality.DELTA,
  })
  const holding = signal()
  let release: () => void = () => {}
  const released = new Promise<void>((r) => {
    release = r
  })

  beforeAll(async () => {
    spans.reset()
    // A fresh MeterProvider: counts start from zero in each mode.
    metrics.disable()
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader, gaugeReader] }))
    t = await setup()
    token = await t.token('alice', 'admin')
    worker = await t.startWorker({
      traceLinkMode: mode,
      tasks: {
        echo: (payload) => ({ echoed: payload }),
        hold: async () => {
          holding.fire()
          await released
        },
      },
    })
  })
  afterAll(async () => {
    release()
    await t?.close()
  })

  /** Submits from SQL with the caller's traceparent; returns the job id and its run id. */
  async function submit(args: {
    name: string
    task?: string
    command?: string
    queue?: string
    priority: number
    max_retries?: number
    traceparent: string
  }) {
    const [job] = await t.sql<{ id: string }[]>`
      SELECT pgsched.submit_job(name => ${args.name}, task => ${args.task ?? null},
        command => ${args.command ?? null}, queue => ${args.queue ?? null},
        priority => ${args.priority}, max_retries => ${args.max_retries ?? 0},
        backoff_base_seconds => 0, traceparent => ${args.traceparent}) AS id`
    const [run] = await t.sql<{ id: string }[]>`
      SELECT id FROM pgsched.runs WHERE job_id = ${job!.id}`
    return { jobId: Number(job!.id), runId: Number(run!.id) }
  }

  async function finalRun(runId: number) {
    return waitFor(
      async () => {
        const res = await t.request('GET', `/v1/runs/${runId}`, { token })
        return ['succeeded', 'dead'].includes(res.body.status) && res.body
      },
      20_000,
      `run ${runId} to reach a final status`,
    )
  }

  /** The data points of a metric as {attributes, value}, from a fresh collection. */
  async function points(name: string) {
    const { resourceMetrics } = await (name.includes('.slots.') ? gaugeReader : reader).collect()
    const found = resourceMetrics.scopeMetrics
      .flatMap((s) => s.metrics)
      .find((m) => m.descriptor.name === name)
    return ((found?.dataPoints ?? []) as DataPoint<unknown>[]).map((p) => ({
      attributes: p.attributes,
      value: p.value,
    }))
  }

  /** The value of a counter or gauge point with exactly these attributes (undefined: none). */
  async function reading(name: string, attributes: Record<string, unknown>) {
    return (await points(name)).find(
      (p) => JSON.stringify(p.attributes) === JSON.stringify(attributes),
    )?.value
  }

  /** An attempt's spans: its process span, and the children of it. */
  function attemptSpans(runId: number) {
    const all = spans.getFinishedSpans()
    return all
      .filter((s) => s.name.startsWith('process ') && s.attributes['pgsched.run_id'] === runId)
      .sort(
        (a, b) => Number(a.attributes['pgsched.attempt']) - Number(b.attributes['pgsched.attempt']),
      )
      .map((process) => ({
        process,
        children: all.filter((s) => s.parentSpanContext?.spanId === idOf(process)),
      }))
  }

  /** Checks how a process span relates to the caller's span in this mode. */
  /** The attempt's links other than to its claim. */
  const callerLinks = (process: ReadableSpan) =>
    process.links.filter((l) => l.attributes?.['messaging.operation.type'] !== 'receive')

  function expectFromCaller(process: ReadableSpan, caller: { traceId: string; spanId: string }) {
    if (mode === 'parent') {
      expect(traceOf(process)).toBe(caller.traceId)
      expect(process.parentSpanContext?.spanId).toBe(caller.spanId)
      expect(callerLinks(process)).toEqual([])
    } else {
      expect(traceOf(process)).not.toBe(caller.traceId)
      expect(process.parentSpanContext).toBeUndefined()
      expect(callerLinks(process).map((l) => l.context)).toEqual([
        expect.objectContaining({ traceId: caller.traceId, spanId: caller.spanId }),
      ])
    }
  }

  /** The attempt links to one finished `receive {queue}` CLIENT span: the claim that started it. */
  function expectClaim(process: ReadableSpan, queue: string): ReadableSpan {
    const links = process.links.filter(
      (l) => l.attributes?.['messaging.operation.type'] === 'receive',
    )
    expect(links).toHaveLength(1)
    const claim = spans
      .getFinishedSpans()
      .find((s) => idOf(s) === links[0]!.context.spanId && traceOf(s) === links[0]!.context.traceId)
    expect(claim, listSpans()).toBeDefined()
    expect(claim!.name).toBe(`receive ${queue}`)
    expect(claim!.kind).toBe(SpanKind.CLIENT)
    expect(claim!.attributes).toMatchObject({
      'messaging.system': 'pgsched',
      'messaging.destination.name': queue,
      'messaging.operation.type': 'receive',
    })
    expect(claim!.attributes['messaging.batch.message_count']).toBeGreaterThanOrEqual(1)
    return claim!
  }

  it('counts busy and total slots per worker while a run holds a slot', async () => {
    const caller = callerTraceparent()
    const { runId } = await submit({
      name: 'hold',
      task: 'hold',
      queue: 'hold',
      priority: 5,
      traceparent: caller.traceparent,
    })
    await holding.next(1, 20_000, 'the hold task to start')
    const me = { worker: worker.name }
    expect(await reading('pgsched.worker.slots.busy', me)).toBe(1)
    expect(await reading('pgsched.worker.slots.total', me)).toBe(4)
    release()
    await finalRun(runId)
    await waitFor(async () => (await reading('pgsched.worker.slots.busy', me)) === 0, 10_000)
  })

  it('traces a task that succeeds: receive, process and settle, from the caller', async () => {
    const caller = callerTraceparent()
    const { jobId, runId } = await submit({
      name: 'ok',
      task: 'echo',
      queue: 'fast',
      priority: 2,
      traceparent: caller.traceparent,
    })
    await finalRun(runId)
    const [attempt] = await waitFor(
      () => {
        const a = attemptSpans(runId)
        return a[0]?.children.some((s) => s.name === 'settle fast') && a
      },
      10_000,
      () => `the settle span; got ${listSpans()}`,
    )
    expect(attemptSpans(runId)).toHaveLength(1)
    const { process, children } = attempt!
    expect(process.name).toBe('process fast')
    expect(process.kind).toBe(SpanKind.CONSUMER)
    expect(process.attributes).toEqual({
      'messaging.system': 'pgsched',
      'messaging.destination.name': 'fast',
      'messaging.message.id': String(runId),
      'pgsched.job_id': jobId,
      'pgsched.run_id': runId,
      'pgsched.attempt': 1,
      'pgsched.priority': 2,
      'pgsched.outcome': 'succeeded',
    })
    expect(process.status.code).toBe(SpanStatusCode.UNSET)
    expectFromCaller(process, caller)

    // The claim it was started by, then (no command) its one child: the result write.
    expectClaim(process, 'fast')
    expect(children.map((s) => [s.name, s.kind])).toEqual([['settle fast', SpanKind.CLIENT]])
    const [settle] = children
    expect(settle!.attributes).toMatchObject({
      'messaging.destination.name': 'fast',
      'pgsched.run_status': 'succeeded',
    })
    expect(traceOf(settle!)).toBe(traceOf(process))
  })

  it('traces a command that fails, is retried once and dead-letters: two attempts, each an error', async () => {
    const caller = callerTraceparent()
    const { runId } = await submit({
      name: 'flaky',
      command: 'exit 3',
      queue: 'flaky',
      priority: 9,
      max_retries: 1,
      traceparent: caller.traceparent,
    })
    const run = await finalRun(runId)
    expect(run).toMatchObject({ status: 'dead', attempt: 2 })
    const attempts = await waitFor(
      () => {
        const a = attemptSpans(runId)
        return (
          a.length === 2 && a.every((x) => x.children.some((s) => s.name === 'settle flaky')) && a
        )
      },
      10_000,
      'two attempts with their settle spans',
    )
    for (const [i, { process, children }] of attempts.entries()) {
      expect(process.name).toBe('process flaky')
      expect(process.attributes).toMatchObject({
        'pgsched.attempt': i + 1,
        'pgsched.priority': 9,
        'pgsched.outcome': 'failed',
        'pgsched.exit_code': 3,
        'pgsched.sandbox': run.attempts[i].sandbox,
      })
      expect(process.status.code).toBe(SpanStatusCode.ERROR)
      expectFromCaller(process, caller)
      expectClaim(process, 'flaky')
      expect(children.map((s) => s.name)).toEqual(['exec', 'settle flaky'])
      const exec = children[0]!
      expect(exec.kind).toBe(SpanKind.INTERNAL)
      expect(exec.attributes).toMatchObject({
        'pgsched.exit_code': 3,
        'pgsched.sandbox': run.attempts[i].sandbox,
        'pgsched.outcome': 'failed',
      })
      expect(exec.status.code).toBe(SpanStatusCode.ERROR)
      expect(children[1]!.attributes['pgsched.run_status']).toBe(i === 0 ? 'failed' : 'dead')
    }
    // The retry is a further attempt: in the caller's trace (parent), or a trace of its own (link).
    const [first, second] = attempts.map((a) => traceOf(a.process))
    if (mode === 'parent') expect(second).toBe(first)
    else expect(second).not.toBe(first)
  })

  it('traces a command that succeeds; the command sees its exec span as TRACEPARENT', async () => {
    const caller = callerTraceparent()
    const { runId } = await submit({
      name: 'cmd',
      command: 'printf %s "$TRACEPARENT"',
      priority: 5,
      traceparent: caller.traceparent,
    })
    const run = await finalRun(runId)
    expect(run.status).toBe('succeeded')
    const [attempt] = await waitFor(
      () => {
        const a = attemptSpans(runId)
        return a[0]?.children.some((s) => s.name === 'settle default') && a
      },
      10_000,
      () => `the settle span; got ${listSpans()}`,
    )
    const { process, children } = attempt!
    expect(process.name).toBe('process default')
    expect(process.attributes).toMatchObject({
      'messaging.destination.name': 'default',
      'pgsched.outcome': 'succeeded',
      'pgsched.exit_code': 0,
      'pgsched.sandbox': run.attempts[0].sandbox,
    })
    expectFromCaller(process, caller)
    const exec = children.find((s) => s.name === 'exec')!
    expect(exec.attributes).toMatchObject({
      'pgsched.exit_code': 0,
      'pgsched.outcome': 'succeeded',
    })
    expect(exec.status.code).toBe(SpanStatusCode.UNSET)
    expect(run.output).toBe(`00-${traceOf(exec)}-${idOf(exec)}-01`)
  })

  it('measures what happened: attempts, durations, queue wait, final statuses, dead letters', async () => {
    // Results are counted once written; stopping the worker waits for every write.
    await worker.stop()
    const count = async (name: string, attributes: Record<string, unknown>) =>
      reading(name, attributes)
    expect(await count('pgsched.attempts.finished', { outcome: 'succeeded', queue: 'fast' })).toBe(
      1,
    )
    expect(await count('pgsched.attempts.finished', { outcome: 'failed', queue: 'flaky' })).toBe(2)
    expect(
      await count('pgsched.attempts.finished', { outcome: 'succeeded', queue: 'default' }),
    ).toBe(1)
    expect(await count('pgsched.attempts.finished', { outcome: 'succeeded', queue: 'hold' })).toBe(
      1,
    )
    expect((await points('pgsched.attempts.finished')).length).toBe(4)

    const histogram = async (name: string) =>
      (await points(name)).map((p) => ({
        attributes: p.attributes,
        count: (p.value as { count: number }).count,
        min: (p.value as { min: number }).min,
      }))
    const durations = await histogram('pgsched.attempt.duration')
    expect(durations).toHaveLength(4)
    expect(durations).toContainEqual({
      attributes: { outcome: 'failed', queue: 'flaky' },
      count: 2,
      min: expect.any(Number),
    })
    for (const d of durations) expect(d.min).toBeGreaterThanOrEqual(0)

    const waits = await histogram('pgsched.queue.wait')
    expect(waits.map(({ attributes, count }) => ({ attributes, count }))).toEqual(
      expect.arrayContaining([
        { attributes: { queue: 'fast', priority_band: 'high' }, count: 1 },
        { attributes: { queue: 'flaky', priority_band: 'low' }, count: 2 },
        { attributes: { queue: 'default', priority_band: 'normal' }, count: 1 },
        { attributes: { queue: 'hold', priority_band: 'normal' }, count: 1 },
      ]),
    )
    expect(waits).toHaveLength(4)
    for (const w of waits) expect(w.min).toBeGreaterThanOrEqual(0)

    expect(await count('pgsched.runs.finished', { status: 'succeeded', queue: 'fast' })).toBe(1)
    expect(await count('pgsched.runs.finished', { status: 'dead', queue: 'flaky' })).toBe(1)
    expect(await count('pgsched.runs.finished', { status: 'succeeded', queue: 'default' })).toBe(1)
    // The failed first attempt of 'flaky' did not finish its run.
    expect((await points('pgsched.runs.finished')).length).toBe(4)
    expect(await points('pgsched.dead_letters')).toEqual([
      { attributes: { queue: 'flaky' }, value: 1 },
    ])

    // A stopped worker no longer reports its slots.
    expect(await reading('pgsched.worker.slots.total', { worker: worker.name })).toBeUndefined()
    expect(await reading('pgsched.worker.slots.busy', { worker: worker.name })).toBeUndefined()
  })
})

/** The finished spans, one line each, for failure messages. */
function listSpans(): string {
  return `\n${spans
    .getFinishedSpans()
    .map(
      (s) =>
        `  ${traceOf(s).slice(0, 8)} ${idOf(s)} ← ${s.parentSpanContext?.spanId ?? '-'} kind ${s.kind} "${s.name}" ${JSON.stringify(s.attributes)}`,
    )
    .join('\n')}`
}
