/**
 * The scheduler's traces and metrics with the real OTel SDK registered in this process: a fired
 * cron tick starts its own trace (a PRODUCER span with the FaaS timer attributes, linked to the
 * job's submission) whose traceparent the tick's run stores; the leader reports leading, leader
 * changes, queue depth and workers from its periodic count (a follower reports none), and
 * counts the runs its rescuer records lost.
 */
import { context, metrics, propagation, SpanKind, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { type DataPoint, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { silentLogger } from '../src/core/types.ts'
import { runStart } from '../src/db/queries/runs.ts'
import { workerHeartbeat } from '../src/db/queries/workers.ts'
import type { Scheduler, SchedulerOptions } from '../src/scheduler/index.ts'
import { countTicks } from '../src/scheduler/tick-telemetry.ts'
import { tickOnce } from '../src/scheduler/ticker.ts'
import { observe } from '../src/telemetry/metrics.ts'
import { setup, signal, type TestBundle, waitFor } from './helpers.ts'

/** A reader collected by the test whenever it wants the metrics' current values. */
class TestReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

const spans = new InMemorySpanExporter()
const reader = new TestReader()

let t: TestBundle
let started: Scheduler[] = []

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  trace.setGlobalTracerProvider(
    new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: spans })] }),
  )
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }))
  t = await setup()
})
afterEach(async () => {
  for (const s of started.reverse()) await s.stop()
  started = []
  await t.sql`SELECT pgsched.cancel_job(id) FROM pgsched.jobs WHERE status IN ('active', 'paused')`
})
afterAll(() => t?.close())

function startScheduler(o: Partial<SchedulerOptions> = {}): Scheduler {
  // Intervals far longer than a test: the periodic services run when the test says (runOnce).
  const s = t.startScheduler({ statsIntervalMs: 3_600_000, degradeIntervalMs: 3_600_000, ...o })
  started.push(s)
  return s
}

async function leader(s: Scheduler): Promise<Scheduler> {
  await waitFor(() => s.isLeader, 10_000, 'the scheduler to lead')
  return s
}

/** The data points of a metric as collected now, with their attributes and values. */
async function points(name: string): Promise<DataPoint<unknown>[]> {
  const { resourceMetrics } = await reader.collect()
  return resourceMetrics.scopeMetrics
    .flatMap((s) => s.metrics)
    .filter((m) => m.descriptor.name === name)
    .flatMap((m) => m.dataPoints as DataPoint<unknown>[])
}

/** The value of the point whose attributes include `attrs`; undefined when there is none. */
async function value(name: string, attrs: Record<string, unknown> = {}): Promise<unknown> {
  const found = (await points(name)).filter((p) =>
    Object.entries(attrs).every(([k, v]) => p.attributes[k] === v),
  )
  if (found.length > 1) throw new Error(`${name}: ${found.length} points match`)
  return found[0]?.value
}

const SUBMITTED = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'

describe('cron ticks', () => {
  it('starts a trace per fired tick, whose span the run stores, and counts it', async () => {
    const [job] = await t.sql<{ id: number }[]>`
      SELECT pgsched.submit_job(name => 'every-second', command => 'true',
        schedule => '* * * * * *', queue => 'lane-t', traceparent => ${SUBMITTED}) AS id`
    const jobId = Number(job!.id)
    await leader(startScheduler())
    const run = await waitFor(
      async () => {
        const [r] = await t.sql<{ id: number; scheduled_for: Date; traceparent: string | null }[]>`
        SELECT id, scheduled_for, traceparent FROM pgsched.runs WHERE job_id = ${jobId}
        ORDER BY id LIMIT 1`
        return r
      },
      10_000,
      'a tick of the job',
    )
    const span = await waitFor(() =>
      spans.getFinishedSpans().find((s) => s.attributes['pgsched.run_id'] === Number(run.id)),
    )

    expect(span.name).toBe('send lane-t')
    expect(span.kind).toBe(SpanKind.PRODUCER)
    expect(span.attributes).toMatchObject({
      'messaging.system': 'pgsched',
      'messaging.destination.name': 'lane-t',
      'messaging.message.id': String(run.id),
      'faas.trigger': 'timer',
      'faas.cron': '* * * * * *',
      'faas.time': new Date(run.scheduled_for).toISOString(),
      'pgsched.job_id': jobId,
    })
    expect(span.attributes['pgsched.tick.lateness']).toBeGreaterThanOrEqual(0)
    // Its own trace: a root, linked to the submission, not a child of it.
    expect(span.parentSpanContext).toBeUndefined()
    expect(span.links.map((l) => l.context.spanId)).toEqual(['b7ad6b7169203331'])
    expect(span.spanContext().traceId).not.toBe('0af7651916cd43dd8448eb211c80319c')
    // The run stores the tick's span, so its attempt joins or links to the tick.
    const { traceId, spanId } = span.spanContext()
    expect(run.traceparent).toBe(`00-${traceId}-${spanId}-01`)

    expect(await value('pgsched.ticks.fired')).toBeGreaterThanOrEqual(1)
    const lateness = (await value('pgsched.tick.lateness')) as { count: number }
    expect(lateness.count).toBeGreaterThanOrEqual(1)
  })

  it('counts the ticks skipped while no leader fired them, and fires only the latest', async () => {
    const [job] = await t.sql<{ id: number }[]>`
      SELECT pgsched.submit_job(name => 'missed', command => 'true', schedule => '* * * * * *') AS id`
    await tickOnce(t.sql, silentLogger) // plans its first tick
    const [planned] = await t.sql<{ next_run_at: Date }[]>`
      SELECT next_run_at FROM pgsched.jobs WHERE id = ${job!.id}`
    const before = Number((await value('pgsched.ticks.missed')) ?? 0)
    // The leader comes back 5 s after the planned tick: ticks +0 … +4 s are skipped, +5 s fires.
    const back = new Date(new Date(planned!.next_run_at).getTime() + 5000)
    await tickOnce(t.sql, silentLogger, 500, back)
    const runs = await t.sql<{ scheduled_for: Date }[]>`
      SELECT scheduled_for FROM pgsched.runs WHERE job_id = ${job!.id}`
    expect(runs.map((r) => new Date(r.scheduled_for).getTime())).toEqual([back.getTime()])
    expect(await value('pgsched.ticks.missed')).toBe(before + 5)
  })

  it('counts the ticks a leader missed, walking the schedule at most a hundred steps', () => {
    const from = new Date('2025-01-01T00:00:00Z')
    const at = (s: number) => new Date(from.getTime() + s * 1000)
    expect(countTicks('* * * * * *', 'UTC', from, from)).toBe(0)
    expect(countTicks('* * * * * *', 'UTC', from, at(5))).toBe(5)
    expect(countTicks('*/10 * * * * *', 'UTC', from, at(35))).toBe(4)
    // A week of a per-second schedule: extrapolated, not walked.
    expect(countTicks('* * * * * *', 'UTC', from, at(7 * 86_400))).toBe(7 * 86_400)
  })
})

describe('leadership', () => {
  it('reports leading per process and counts leadership gained and lost', async () => {
    const a = startScheduler({ holder: 'holder-a' })
    await leader(a)
    const b = startScheduler({ holder: 'holder-b' })
    const polls = signal()
    const c = startScheduler({ holder: 'holder-c', onPass: (s) => s === 'elector' && polls.fire() })
    await polls.next(1)
    expect(b.isLeader || c.isLeader).toBe(false)
    expect(await value('pgsched.leading', { holder: 'holder-a' })).toBe(1)
    expect(await value('pgsched.leading', { holder: 'holder-c' })).toBe(0)
    const acquired = Number((await value('pgsched.leader.changes', { change: 'acquired' })) ?? 0)
    const lost = Number((await value('pgsched.leader.changes', { change: 'lost' })) ?? 0)

    await a.stop()
    started = started.filter((s) => s !== a)
    // A stopped scheduler reads 0; one of the others takes over.
    expect(await value('pgsched.leading', { holder: 'holder-a' })).toBe(0)
    await waitFor(() => b.isLeader || c.isLeader, 10_000, 'a new leader')
    expect(await value('pgsched.leader.changes', { change: 'lost' })).toBe(lost + 1)
    expect(await value('pgsched.leader.changes', { change: 'acquired' })).toBe(acquired + 1)
  })
})

describe('the leader’s counts', () => {
  it('reports queue depth by status and queue and workers by state, only while leading', async () => {
    for (const queue of [null, null, 'lane-s']) {
      await t.sql`SELECT pgsched.submit_job(name => 'depth', command => 'true', queue => ${queue},
        run_at => now() + interval '1 hour')`
    }
    const [dead] = await t.sql<{ id: number }[]>`
      SELECT pgsched.submit_job(name => 'dead', command => 'false', queue => 'lane-s') AS id`
    await t.sql`UPDATE pgsched.runs SET status = 'dead', finished_at = now()
                WHERE job_id = ${dead!.id}`
    for (const [name, state] of [
      ['w-live', 'active'],
      ['w-done', 'stopped'],
    ] as const) {
      await workerHeartbeat(t.sql, {
        name,
        host: 'test',
        pid: 1,
        concurrency: 1,
        runs: [],
        executorIds: [`pool-${name}`],
        state,
      })
    }
    const s = await leader(startScheduler())
    const follower = startScheduler()
    // Nothing before the first count: no zero that is not a measurement.
    expect(await points('pgsched.queue.depth')).toEqual([])
    await s.runOnce('stats')
    // Another process's stats pass, leading or not, reports nothing: it is not leading.
    await follower.runOnce('stats')

    const depth = (status: string, queue: string) => value('pgsched.queue.depth', { status, queue })
    // Each point is the whole queue as the leader counted it, not one per process.
    expect(await depth('queued', 'default')).toBe(2)
    expect(await depth('queued', 'lane-s')).toBe(1)
    expect(await depth('dead', 'lane-s')).toBe(1)
    expect(await depth('running', 'default')).toBe(0)
    expect(await value('pgsched.workers', { state: 'active' })).toBe(1)
    expect(await value('pgsched.workers', { state: 'stopped' })).toBe(1)
    expect(await value('pgsched.workers', { state: 'dead' })).toBe(0)
    expect(await value('pgsched.degradation.level')).toBeUndefined()
    await s.runOnce('degrader')
    expect(await value('pgsched.degradation.level')).toBe(0)
    expect(await value('pgsched.breaker.state', { breaker: 'resolver' })).toBe(0)

    await s.stop()
    started = started.filter((x) => x !== s)
    await waitFor(() => follower.isLeader, 10_000, 'the follower to lead')
    // The former leader reads 0 everywhere, and the new one reports only what it has counted
    // itself (nothing yet), so a sum over processes is never stale.
    const after = await points('pgsched.queue.depth')
    expect(after.length).toBeGreaterThan(0)
    expect(after.map((p) => p.value)).toEqual(after.map(() => 0))
    expect(await value('pgsched.workers', { state: 'active' })).toBe(0)
    expect(await value('pgsched.degradation.level')).toBe(0)
    await follower.runOnce('stats')
    expect(await points('pgsched.queue.depth')).toContainEqual(
      expect.objectContaining({ attributes: { status: 'queued', queue: 'default' }, value: 2 }),
    )
  })

  it('needs a former leader to read 0: the SDK keeps a removed observer’s last value', async () => {
    const remove = observe('pgsched.breaker.state', () => [[2, { breaker: 'probe' }]])
    expect(await value('pgsched.breaker.state', { breaker: 'probe' })).toBe(2)
    remove()
    expect(await value('pgsched.breaker.state', { breaker: 'probe' })).toBe(2)
  })

  it('counts the runs its rescuer records lost, as lost attempts and dead letters', async () => {
    const before = Number((await value('pgsched.rescues')) ?? 0)
    const count = async (name: string, attrs: Record<string, unknown>) =>
      Number((await value(name, attrs)) ?? 0)
    const lostBefore = await count('pgsched.attempts.finished', { outcome: 'lost', queue: 'gone' })
    const deadBefore = await count('pgsched.dead_letters', { queue: 'gone' })
    const name = 'w-gone'
    await workerHeartbeat(t.sql, {
      name,
      host: 'test',
      pid: 2,
      concurrency: 1,
      runs: [],
      executorIds: [`pool-${name}`],
      state: 'active',
    })
    const [job] = await t.sql<{ id: number }[]>`
      SELECT pgsched.submit_job(name => 'lost', command => 'true', max_retries => 0,
        queue => 'gone') AS id`
    const [run] = await t.sql<{ id: number }[]>`
      SELECT id FROM pgsched.runs WHERE job_id = ${job!.id}`
    await runStart(t.sql, Number(run!.id), 1, name)
    await t.sql`UPDATE pgsched.workers SET heartbeat_at = now() - interval '1 minute'
                WHERE name = ${name}`
    // A 1 s heartbeat timeout: the rescuer acts once it has reached the database for 1 s.
    startScheduler({ heartbeatTimeoutMs: 1000 })
    await waitFor(
      async () => {
        const [r] = await t.sql`SELECT status FROM pgsched.runs WHERE id = ${run!.id}`
        return r!.status !== 'running'
      },
      10_000,
      'the rescue',
    )
    expect(await value('pgsched.rescues')).toBe(before + 1)
    // No retry left: the lost attempt dead-letters the run (counted once the sweep has read its queue).
    await waitFor(
      async () => (await count('pgsched.dead_letters', { queue: 'gone' })) === deadBefore + 1,
      5_000,
      'the dead letter to be counted',
    )
    expect(await count('pgsched.attempts.finished', { outcome: 'lost', queue: 'gone' })).toBe(
      lostBefore + 1,
    )
    expect(await count('pgsched.dead_letters', { queue: 'gone' })).toBe(deadBefore + 1)
    expect(await count('pgsched.runs.finished', { status: 'dead', queue: 'gone' })).toBe(1)
  })
})
