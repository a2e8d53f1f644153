/** The user journeys of the operations design, end to end: API → scheduler → worker → history. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { Worker } from '../src/worker/index.ts'
import { setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
let alice: string
let worker: Worker

beforeAll(async () => {
  t = await setup()
  alice = await t.token('alice', 'submitter')
  worker = await t.startWorker({
    tasks: {
      echo: (payload) => ({ echoed: payload }),
      explode: () => {
        throw new Error('kaboom')
      },
    },
  })
  t.startScheduler()
})
afterAll(() => t.close())

async function submit(body: Record<string, unknown>) {
  const res = await t.request('POST', '/v1/jobs', { token: alice, body })
  expect(res.status).toBe(201)
  return res.body as { job_id: number; next_run: string }
}

async function runsOf(jobId: number) {
  const res = await t.request('GET', `/v1/jobs/${jobId}/runs`, { token: alice })
  return res.body.items as { run_id: number; status: string; scheduled_for: string }[]
}

async function runDetail(runId: number) {
  return (await t.request('GET', `/v1/runs/${runId}`, { token: alice })).body
}

async function settledRun(jobId: number, statuses: string[], timeoutMs = 15_000) {
  return waitFor(
    async () => (await runsOf(jobId)).find((r) => statuses.includes(r.status)),
    timeoutMs,
    `a run of job ${jobId} in ${statuses}`,
  )
}

describe('journey 1: a scheduled job runs on time and its next run advances', () => {
  it('fires a seconds-field cron job at each tick and moves next_run on', async () => {
    const job = await submit({
      name: 'every-second',
      command: 'echo tick',
      schedule: '* * * * * *',
    })
    const firstTick = new Date(job.next_run)
    expect(firstTick.getUTCMilliseconds()).toBe(0)
    const done = await waitFor(
      async () => {
        const runs = (await runsOf(job.job_id)).filter((r) => r.status === 'succeeded')
        return runs.length >= 2 ? runs : undefined
      },
      15_000,
      'two succeeded ticks',
    )
    for (const run of done) {
      const d = await runDetail(run.run_id)
      expect(new Date(d.scheduled_for).getUTCMilliseconds()).toBe(0)
      expect(d.output).toBe('tick\n')
      // On time: the tick started within a second of its scheduled instant.
      expect(Date.parse(d.started_at) - Date.parse(d.scheduled_for)).toBeLessThan(1000)
    }
    const later = (await t.request('GET', `/v1/jobs/${job.job_id}`, { token: alice })).body
    expect(Date.parse(later.next_run)).toBeGreaterThan(firstTick.getTime())
    await t.request('DELETE', `/v1/jobs/${job.job_id}`, { token: alice })
  })

  it('runs a one-off command now and a delayed one at its run_at', async () => {
    const now = await submit({ name: 'now', command: 'echo now' })
    const runAt = new Date(Date.now() + 1500)
    const later = await submit({
      name: 'later',
      command: 'echo later',
      run_at: runAt.toISOString(),
    })
    const first = await settledRun(now.job_id, ['succeeded'])
    expect((await runDetail(first.run_id)).output).toBe('now\n')
    const second = await settledRun(later.job_id, ['succeeded'])
    const d = await runDetail(second.run_id)
    expect(Date.parse(d.started_at)).toBeGreaterThanOrEqual(runAt.getTime())
    const job = (await t.request('GET', `/v1/jobs/${later.job_id}`, { token: alice })).body
    expect(job.status).toBe('completed')
    expect(job.next_run).toBeNull()
  })

  it('runs a named task with its payload; its result is the output', async () => {
    const job = await submit({ name: 'task', task: 'echo', payload: { n: 42 } })
    const run = await settledRun(job.job_id, ['succeeded'])
    expect(JSON.parse((await runDetail(run.run_id)).output)).toEqual({ echoed: { n: 42 } })
  })
})

describe('journey 2: failure, retry with backoff, dead letters', () => {
  it('retries a failing job with exponential backoff until it succeeds', async () => {
    // Fails on attempts 1 and 2, succeeds on 3: delays must be base × 2^(n−1) = 1 s, then 2 s.
    const job = await submit({
      name: 'flaky',
      command: 'echo "attempt $PGSCHED_ATTEMPT"; [ "$PGSCHED_ATTEMPT" -ge 3 ] || exit 7',
      max_retries: 3,
      backoff_base_seconds: 1,
    })
    const run = await settledRun(job.job_id, ['succeeded'], 20_000)
    const d = await runDetail(run.run_id)
    expect(d).toMatchObject({
      status: 'succeeded',
      attempt: 3,
      exit_code: 0,
      output: 'attempt 3\n',
    })
    expect(
      d.attempts.map((a: { outcome: string; exit_code: number }) => [a.outcome, a.exit_code]),
    ).toEqual([
      ['failed', 7],
      ['failed', 7],
      ['succeeded', 0],
    ])
    const gap = (n: number) =>
      Date.parse(d.attempts[n].started_at) - Date.parse(d.attempts[n - 1].finished_at)
    expect(gap(1)).toBeGreaterThanOrEqual(1000 - 50)
    expect(gap(2)).toBeGreaterThanOrEqual(2000 - 50)
    expect(d.attempts[0].error).toBe('exited with code 7')
  })

  it('dead-letters a job that keeps failing, and replays it from the dead-letter list', async () => {
    const job = await submit({
      name: 'doomed',
      command: '[ "$PGSCHED_ATTEMPT" -ge 3 ] || exit 3',
      max_retries: 1,
      backoff_base_seconds: 0,
    })
    const dead = await settledRun(job.job_id, ['dead'])
    const d = await runDetail(dead.run_id)
    expect(d.attempts).toHaveLength(2)
    expect(d.error).toBe('exited with code 3')
    const letters = await t.request('GET', '/v1/dead-letters', { token: alice })
    expect(letters.body.items.map((r: { run_id: number }) => r.run_id)).toContain(dead.run_id)

    const replay = await t.request('POST', `/v1/runs/${dead.run_id}/retry`, { token: alice })
    expect(replay.status).toBe(200)
    expect(replay.body).toMatchObject({ status: 'queued', attempt: 3 })
    await waitFor(
      async () => (await runDetail(dead.run_id)).status === 'succeeded',
      10_000,
      'replayed run to succeed',
    )
    const again = await t.request('POST', `/v1/runs/${dead.run_id}/retry`, { token: alice })
    expect(again.status).toBe(409)
    const after = await t.request('GET', '/v1/dead-letters', { token: alice })
    expect(after.body.items.map((r: { run_id: number }) => r.run_id)).not.toContain(dead.run_id)
  })

  it('records a task handler that throws as a failed attempt with its error', async () => {
    const job = await submit({ name: 'explode', task: 'explode', max_retries: 0 })
    const dead = await settledRun(job.job_id, ['dead'])
    expect((await runDetail(dead.run_id)).error).toBe('Error: kaboom')
  })
})

describe('stopping commands', () => {
  it('times out a command: SIGTERM, attempt timed_out, then retry policy', async () => {
    const job = await submit({
      name: 'slow',
      command: 'sleep 30',
      timeout_seconds: 1,
      max_retries: 0,
    })
    const dead = await settledRun(job.job_id, ['dead'], 10_000)
    const d = await runDetail(dead.run_id)
    expect(d.error).toBe('timed out after 1 s')
    expect(d.attempts[0].outcome).toBe('timed_out')
    expect(Date.parse(d.finished_at) - Date.parse(d.started_at)).toBeLessThan(5000)
  })

  it('cancels a running command: the process stops and the run is cancelled', async () => {
    const job = await submit({ name: 'long', command: 'echo started; sleep 30' })
    const running = await settledRun(job.job_id, ['running'])
    await waitFor(
      () => worker.activeRuns.includes(running.run_id),
      5000,
      'the worker to hold the run',
    )
    const cancelledAt = Date.now()
    const res = await t.request('DELETE', `/v1/jobs/${job.job_id}`, { token: alice })
    expect(res.status).toBe(200)
    await waitFor(
      () => !worker.activeRuns.includes(running.run_id),
      5000,
      'the worker to stop the process',
    )
    expect(Date.now() - cancelledAt).toBeLessThan(3000)
    const d = await runDetail(running.run_id)
    expect(d.status).toBe('cancelled')
    await waitFor(
      async () => (await runDetail(running.run_id)).attempts[0].outcome === 'cancelled',
      5000,
      'attempt outcome',
    )
  })
})
