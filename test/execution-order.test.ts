/**
 * Execution order, as a user sees it: priorities decide which runnable run goes first, a serial
 * lane (queue) runs its runs one at a time while other runs go alongside, and a recurring job's
 * concurrency_policy decides what a tick does while the previous run is unfinished ('forbid'
 * skips it, 'replace' cancels the earlier run and the worker stops its handler).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { sleep } from '../src/core/sleep.ts'
import { silentLogger } from '../src/core/types.ts'
import { Ticker } from '../src/scheduler/ticker.ts'
import type { TaskContext } from '../src/worker/tasks.ts'
import { setup, signal, type TestBundle, waitFor } from './helpers.ts'

/** What a task handler saw: its start and end (epoch ms), and whether it was stopped. */
interface Span {
  runId: number
  payload: unknown
  start: number
  end?: number
  aborted?: boolean
  reason?: unknown
}

/** A run as GET /v1/jobs/{id}/runs lists it. */
interface ApiRun {
  run_id: number
  status: string
  error: string | null
  scheduled_for: string
  started_at: string | null
  finished_at: string | null
  created_at: string
}

/** A handler that records its span into `spans` and waits `ms` (or until its signal aborts). */
function recording(spans: Span[], ms: number) {
  return async (payload: unknown, ctx: TaskContext) => {
    const span: Span = { runId: ctx.runId, payload, start: Date.now() }
    spans.push(span)
    await sleep(ms, ctx.signal)
    span.aborted = ctx.signal.aborted
    span.reason = ctx.signal.reason
    span.end = Date.now()
    return { slept: ms }
  }
}

/** Fails unless each span starts at or after the previous one (by start) ended. */
function expectSerial(spans: { start: number; end: number }[], what: string) {
  const sorted = [...spans].sort((a, b) => a.start - b.start)
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!
    const next = sorted[i]!
    expect(
      next.start,
      `${what}: span ${i} started at ${next.start}, before span ${i - 1} ended at ${prev.end}`,
    ).toBeGreaterThanOrEqual(prev.end)
  }
}

const ms = (iso: string) => Date.parse(iso)

/** The submission helpers of one test bundle. */
function client(bundle: () => TestBundle, token: () => string) {
  return {
    async submit(body: Record<string, unknown>) {
      const res = await bundle().request('POST', '/v1/jobs', { token: token(), body })
      expect(res.status, JSON.stringify(res.body)).toBe(201)
      return res.body as { job_id: number; concurrency_policy: string }
    },
    async runsOf(jobId: number): Promise<ApiRun[]> {
      const res = await bundle().request('GET', `/v1/jobs/${jobId}/runs?limit=500`, {
        token: token(),
      })
      expect(res.status).toBe(200)
      return res.body.items
    },
    async runDetail(runId: number) {
      return (await bundle().request('GET', `/v1/runs/${runId}`, { token: token() })).body
    },
    async pause(jobId: number) {
      const res = await bundle().request('PATCH', `/v1/jobs/${jobId}`, {
        token: token(),
        body: { status: 'paused' },
      })
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      expect(res.body.status).toBe('paused')
    },
  }
}

describe('priorities', () => {
  let t: TestBundle
  let alice: string
  const api = client(
    () => t,
    () => alice,
  )

  beforeAll(async () => {
    t = await setup()
    alice = await t.token('alice', 'submitter')
  })
  afterAll(() => t.close())

  it('runs the runnable runs by priority (1 first), ties in submission order', async () => {
    const priorities = [9, 5, 1, 7, 3, 10, 2, 5, 1, 8, 4, 6]
    const ids: number[] = []
    // No worker yet: every run is queued and runnable when the worker starts.
    for (const [i, priority] of priorities.entries()) {
      const job = await api.submit({ name: `order-${i}`, task: 'order', payload: i, priority })
      ids.push(job.job_id)
    }
    const expected = priorities
      .map((priority, i) => ({ priority, i }))
      .sort((a, b) => a.priority - b.priority || a.i - b.i)
      .map((x) => x.i)
    expect(expected).toEqual([2, 8, 6, 4, 10, 1, 7, 11, 3, 9, 0, 5])

    const seen: unknown[] = []
    await t.startWorker({ concurrency: 1, tasks: { order: (payload) => void seen.push(payload) } })
    await waitFor(
      async () => {
        const [row] = await t.sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pgsched.runs
          WHERE job_id IN ${t.sql(ids)} AND status = 'succeeded'`
        return row!.n === priorities.length
      },
      15_000,
      () => `all ${priorities.length} runs to succeed; the handler saw ${JSON.stringify(seen)}`,
    )
    expect(seen).toEqual(expected)

    // The history a user reads agrees: by start time, the runs went in the same order.
    const started = await Promise.all(
      ids.map(async (id, i) => {
        const [run] = await api.runsOf(id)
        expect(run!.status).toBe('succeeded')
        return { i, at: ms(run!.started_at!) }
      }),
    )
    expect(started.sort((a, b) => a.at - b.at || a.i - b.i).map((s) => s.i)).toEqual(expected)
  })
})

describe('priorities with every slot busy', () => {
  let t: TestBundle
  let alice: string
  const api = client(
    () => t,
    () => alice,
  )

  beforeAll(async () => {
    t = await setup()
    alice = await t.token('alice', 'submitter')
  })
  afterAll(() => t.close())

  it('never holds an urgent run behind a less urgent one claimed while every slot was busy', async () => {
    // Issue 14's inversion: with the only slot busy, a priority-10 run queued first must not be
    // claimed ahead of a priority-1 run queued after it.
    const seen: unknown[] = []
    let release!: () => void
    const released = new Promise<void>((r) => {
      release = r
    })
    const holding = signal()
    const worker = await t.startWorker({
      concurrency: 1,
      tasks: {
        hold: async () => {
          holding.fire()
          await released
        },
        urgency: (payload) => void seen.push(payload),
      },
    })
    try {
      const held = holding.next(1, 10_000, 'the hold run to start')
      await api.submit({ name: 'hold', task: 'hold', priority: 5 })
      await held
      const ids: number[] = []
      for (const [i, priority] of [10, 1, 10, 1].entries()) {
        ids.push(
          (await api.submit({ name: `urgency-${i}`, task: 'urgency', payload: i, priority }))
            .job_id,
        )
        // Time for a worker that claims ahead to take it (it is woken by each submission).
        await sleep(300)
      }
      release()
      await waitFor(
        async () => {
          const [row] = await t.sql<{ n: number }[]>`
            SELECT count(*)::int AS n FROM pgsched.runs
            WHERE job_id IN ${t.sql(ids)} AND status = 'succeeded'`
          return row!.n === ids.length
        },
        15_000,
        () => `the four runs to succeed; the handler saw ${JSON.stringify(seen)}`,
      )
      expect(seen).toEqual([1, 3, 0, 2])
    } finally {
      release()
      await worker.stop()
    }
  })
})

describe('serial lanes', () => {
  let t: TestBundle
  let alice: string
  const api = client(
    () => t,
    () => alice,
  )
  const laneSpans: Span[] = []
  const freeSpans: Span[] = []

  beforeAll(async () => {
    t = await setup()
    alice = await t.token('alice', 'submitter')
    await t.startWorker({
      concurrency: 4,
      tasks: { lane: recording(laneSpans, 200), free: recording(freeSpans, 200) },
    })
  })
  afterAll(() => t.close())

  it("runs a lane's runs one at a time, in order, while other runs go alongside", async () => {
    const lane: number[] = []
    for (const i of [0, 1, 2, 3]) {
      lane.push(
        (await api.submit({ name: `lane-${i}`, task: 'lane', payload: i, queue: 'lane-a' })).job_id,
      )
    }
    const free: number[] = []
    for (const i of [0, 1]) {
      free.push((await api.submit({ name: `free-${i}`, task: 'free', payload: i })).job_id)
    }
    await waitFor(
      async () => {
        const [row] = await t.sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pgsched.runs
          WHERE job_id IN ${t.sql([...lane, ...free])} AND status = 'succeeded'`
        return row!.n === 6
      },
      15_000,
      'the six runs to succeed',
    )

    // What the handlers saw: never two lane runs at once, in submission order.
    expect(laneSpans).toHaveLength(4)
    expectSerial(
      laneSpans.map((s) => ({ start: s.start, end: s.end! })),
      'lane-a handlers',
    )
    expect([...laneSpans].sort((a, b) => a.start - b.start).map((s) => s.payload)).toEqual([
      0, 1, 2, 3,
    ])
    // What the history shows: the lane's runs do not overlap either.
    const history = await Promise.all(lane.map(async (id) => (await api.runsOf(id))[0]!))
    expectSerial(
      history.map((r) => ({ start: ms(r.started_at!), end: ms(r.finished_at!) })),
      'lane-a runs (started_at..finished_at)',
    )

    // The lane held back only its own runs: the others started before its last one did.
    const lastLaneStart = Math.max(...laneSpans.map((s) => s.start))
    expect(freeSpans).toHaveLength(2)
    for (const s of freeSpans) expect(s.start).toBeLessThan(lastLaneStart)
  })
})

describe('concurrency_policy of a recurring job', () => {
  let t: TestBundle
  let alice: string
  const api = client(
    () => t,
    () => alice,
  )
  const slowSpans: Span[] = []
  const holdSpans: Span[] = []
  let worker: Awaited<ReturnType<TestBundle['startWorker']>>

  beforeAll(async () => {
    t = await setup()
    alice = await t.token('alice', 'submitter')
    worker = await t.startWorker({
      concurrency: 4,
      shutdownGraceMs: 2000,
      tasks: { slow: recording(slowSpans, 2500), hold: recording(holdSpans, 10_000) },
    })
    t.startScheduler()
  })
  afterAll(() => t.close())

  const FORBID_ERROR = 'skipped: the previous run is still in progress (concurrency_policy forbid)'

  it('forbid: skips a tick while the previous run is unfinished; runs never overlap', async () => {
    const job = await api.submit({
      name: 'forbid',
      task: 'slow',
      schedule: '* * * * * *',
      concurrency_policy: 'forbid',
      max_retries: 0,
    })
    expect(job.concurrency_policy).toBe('forbid')
    await waitFor(
      async () =>
        slowSpans.length >= 2 && (await api.runsOf(job.job_id)).some((r) => r.status === 'skipped'),
      15_000,
      () => `two executions and a skipped tick; handlers so far: ${slowSpans.length}`,
    )
    await api.pause(job.job_id)
    // Pausing lets the running run finish.
    await waitFor(
      () => slowSpans.every((s) => s.end !== undefined) && worker.activeRuns.length === 0,
      10_000,
      'the running execution to finish',
    )

    const runs = (await api.runsOf(job.job_id)).sort((a, b) => a.run_id - b.run_id)
    const skipped = runs.filter((r) => r.status === 'skipped')
    const kept = runs.filter((r) => r.status !== 'skipped')
    expect(skipped.length).toBeGreaterThanOrEqual(1)
    for (const r of skipped) {
      expect(r).toMatchObject({ error: FORBID_ERROR, started_at: null })
    }
    // Every run the worker started succeeded; a run created just before the pause may be held.
    for (const r of kept) expect(['succeeded', 'queued']).toContain(r.status)
    const executed = kept.filter((r) => r.started_at !== null)
    const byId = (a: number, b: number) => a - b
    expect(executed.map((r) => r.run_id).sort(byId)).toEqual(
      slowSpans.map((s) => s.runId).sort(byId),
    )

    // Never two at once: neither in the handlers nor in the history.
    expectSerial(
      slowSpans.map((s) => ({ start: s.start, end: s.end! })),
      'forbid handlers',
    )
    expectSerial(
      executed.map((r) => ({ start: ms(r.started_at!), end: ms(r.finished_at!) })),
      'forbid runs (started_at..finished_at)',
    )
    // A tick got a real run only once the previous one had finished...
    for (let i = 1; i < kept.length; i++) {
      expect(ms(kept[i]!.created_at)).toBeGreaterThanOrEqual(ms(kept[i - 1]!.finished_at!))
    }
    // ...and was skipped only while an earlier run was unfinished.
    for (const s of skipped) {
      const busy = kept.some(
        (r) =>
          r.run_id < s.run_id &&
          ms(r.created_at) <= ms(s.created_at) &&
          (r.finished_at === null || ms(r.finished_at) >= ms(s.created_at)),
      )
      expect(busy, `skipped run ${s.run_id} had no unfinished run before it`).toBe(true)
    }
  })

  it('replace: a tick cancels the unfinished run and the worker stops its handler', async () => {
    const job = await api.submit({
      name: 'replace',
      task: 'hold',
      schedule: '* * * * * *',
      concurrency_policy: 'replace',
      max_retries: 0,
    })
    expect(job.concurrency_policy).toBe('replace')
    await waitFor(
      () => holdSpans.filter((s) => s.end !== undefined).length >= 2,
      15_000,
      () => `two handlers to be stopped; started so far: ${holdSpans.length}`,
    )
    await api.pause(job.job_id)

    const runs = (await api.runsOf(job.job_id)).sort((a, b) => a.run_id - b.run_id)
    const newest = runs.at(-1)!
    const replaced = runs.slice(0, -1)
    expect(replaced.length).toBeGreaterThanOrEqual(2)
    // Only the newest run is left unfinished; every earlier one was replaced by the next tick.
    expect(['queued', 'running']).toContain(newest.status)
    for (const [i, r] of replaced.entries()) {
      expect(r.status, `run ${r.run_id}`).toBe('cancelled')
      const m = /^replaced by the run for (.+) \(concurrency_policy replace\)$/.exec(r.error ?? '')
      expect(m, `run ${r.run_id} error: ${r.error}`).not.toBeNull()
      const named = m![1]!.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')
      expect(Date.parse(named), `run ${r.run_id} names ${m![1]}`).toBe(
        ms(runs[i + 1]!.scheduled_for),
      )
    }

    // The handlers of replaced runs saw their signal abort, long before their 10 s were up.
    const stopped = holdSpans.filter((s) => replaced.some((r) => r.run_id === s.runId))
    expect(stopped.length).toBeGreaterThanOrEqual(2)
    for (const s of stopped) {
      await waitFor(() => s.end !== undefined, 5000, `handler of run ${s.runId} to stop`)
      expect(s).toMatchObject({ aborted: true, reason: 'cancelled' })
      expect(s.end! - s.start).toBeLessThan(3000)
      await waitFor(
        async () => (await api.runDetail(s.runId)).attempts[0]?.outcome === 'cancelled',
        5000,
        `attempt of run ${s.runId} to be recorded cancelled`,
      )
    }
    expect(holdSpans.some((s) => s.runId === newest.run_id && s.end !== undefined)).toBe(false)

    // Paused: no tick fires any more, not even one due a minute from now (a second ticker with
    // its clock pinned there; two tickers at once are safe).
    await new Ticker({ sql: t.sql, logger: silentLogger }).runOnce(new Date(Date.now() + 60_000))
    expect((await api.runsOf(job.job_id)).length).toBe(runs.length)

    // Cancel the job so its last handler stops before the worker shuts down.
    const cancelled = await t.request('DELETE', `/v1/jobs/${job.job_id}`, { token: alice })
    expect(cancelled.status).toBe(200)
    await waitFor(() => worker.activeRuns.length === 0, 5000, 'the last handler to stop')
  })
})

describe('REST validation of concurrency_policy', () => {
  let t: TestBundle
  let alice: string

  beforeAll(async () => {
    t = await setup()
    alice = await t.token('alice', 'submitter')
  })
  afterAll(() => t.close())

  const jobCount = async () =>
    (await t.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgsched.jobs`)[0]!.n

  it.each([
    ['on a job without a schedule', { name: 'x', task: 'x', concurrency_policy: 'forbid' }],
    [
      'with an unknown policy',
      { name: 'x', task: 'x', schedule: '* * * * * *', concurrency_policy: 'sometimes' },
    ],
  ])('refuses concurrency_policy %s with 400 naming the field', async (_, body) => {
    const before = await jobCount()
    const res = await t.request('POST', '/v1/jobs', { token: alice, body })
    expect(res.status).toBe(400)
    expect(res.body).toMatchObject({ type: 'urn:pgsched:problem:validation', status: 400 })
    expect(res.body.errors.map((e: { field: string }) => e.field)).toEqual(['concurrency_policy'])
    expect(await jobCount()).toBe(before)
  })

  it('accepts each policy with a schedule, and defaults to allow', async () => {
    for (const policy of ['allow', 'forbid', 'replace', undefined]) {
      const res = await t.request('POST', '/v1/jobs', {
        token: alice,
        body: { name: 'yearly', task: 'x', schedule: '0 0 1 1 *', concurrency_policy: policy },
      })
      expect(res.status, JSON.stringify(res.body)).toBe(201)
      expect(res.body.concurrency_policy).toBe(policy ?? 'allow')
    }
  })
})
