/**
 * Writes made for a group at once (benchmark issue): a worker's results in one statement, and
 * submissions whose executor jobs are added together at the end of their group. Each caller must
 * still see exactly what it would have seen alone.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { type AttemptResult, runFinishMany, runStartMany } from '../src/db/queries/runs.ts'
import { setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle

beforeAll(async () => {
  t = await setup({ rateLimitPerMinute: 100_000 })
})
afterAll(() => t.close())

async function queuedRuns(n: number, maxRetries = 3): Promise<number[]> {
  const ids: number[] = []
  for (let i = 0; i < n; i++) {
    const [job] = await t.sql<{ id: number }[]>`
      SELECT pgsched.submit_job(name => 'grouped', command => 'true', max_retries => ${maxRetries},
        run_at => now() + interval '1 hour') AS id`
    const [run] = await t.sql<
      { id: number }[]
    >`SELECT id FROM pgsched.runs WHERE job_id = ${job!.id}`
    ids.push(run!.id)
  }
  return ids
}

const result = (outcome: AttemptResult['outcome'], error: string | null = null): AttemptResult => ({
  outcome,
  exitCode: outcome === 'succeeded' ? 0 : 1,
  output: `${outcome}\n`,
  error,
})

it('records a mixed group of results in order: successes, a failure, a stale attempt', async () => {
  const [a, b, c, d] = await queuedRuns(4)
  const started = await runStartMany(
    t.sql,
    [a, b, c, d].map((run_id) => ({ run_id: run_id!, attempt: 1 })),
    'w1',
  )
  expect(started.map((s) => s?.run_id)).toEqual([a, b, c, d])
  // d's attempt 1 was taken away (as a rescue does): its result must be dropped.
  await t.sql`UPDATE pgsched.runs SET status = 'queued', attempt = 2 WHERE id = ${d!}`

  const statuses = await runFinishMany(
    t.sql,
    [
      { run: { run_id: a!, attempt: 1 }, result: result('succeeded') },
      { run: { run_id: b!, attempt: 1 }, result: result('failed', 'exit code 1') },
      { run: { run_id: c!, attempt: 1 }, result: result('succeeded') },
      { run: { run_id: d!, attempt: 1 }, result: result('succeeded') },
    ],
    'w1',
  )
  expect(statuses).toEqual(['succeeded', 'failed', 'succeeded', null])

  const runs = await t.sql<{ id: number; status: string; attempt: number; output: string }[]>`
    SELECT id, status, attempt, output FROM pgsched.runs WHERE id IN ${t.sql([a!, b!, c!, d!])}
    ORDER BY id`
  expect(runs.map((r) => [r.status, r.attempt])).toEqual([
    ['succeeded', 1],
    ['failed', 2],
    ['succeeded', 1],
    ['queued', 2],
  ])
  const jobs = await t.sql<{ status: string }[]>`
    SELECT j.status FROM pgsched.jobs j JOIN pgsched.runs r ON r.job_id = j.id
    WHERE r.id IN ${t.sql([a!, b!, c!])} ORDER BY r.id`
  expect(jobs.map((j) => j.status)).toEqual(['completed', 'active', 'completed'])
  const attempts = await t.sql<{ run_id: number; outcome: string }[]>`
    SELECT run_id, outcome FROM pgsched.run_attempts
    WHERE run_id IN ${t.sql([a!, b!, c!])} ORDER BY run_id`
  expect(attempts.map((x) => x.outcome)).toEqual(['succeeded', 'failed', 'succeeded'])

  // The history has every transition once, the per-statement trigger included.
  const events = await t.sql<{ run_id: number; to_status: string }[]>`
    SELECT run_id, to_status FROM pgsched.run_events
    WHERE run_id IN ${t.sql([a!, b!, d!])} ORDER BY run_id, id`
  const of = (run: number) => events.filter((e) => e.run_id === run).map((e) => e.to_status)
  expect(of(a!)).toEqual(['queued', 'running', 'succeeded'])
  expect(of(b!)).toEqual(['queued', 'running', 'failed'])
  expect(of(d!)).toEqual(['queued', 'running', 'queued', 'result_dropped'])
})

it('refuses arrays of different lengths and changes nothing', async () => {
  const [a] = await queuedRuns(1)
  await runStartMany(t.sql, [{ run_id: a!, attempt: 1 }], 'w1')
  await expect(
    t.sql`SELECT pgsched.run_finish_many(${[a!]}::bigint[], ${[1, 1]}::integer[], 'w1',
      ${['succeeded']}::text[], ${[0]}::integer[], ${[null]}::text[], ${[null]}::text[])`,
  ).rejects.toThrow(/every array must have one element per run/)
  const [run] = await t.sql`SELECT status FROM pgsched.runs WHERE id = ${a!}`
  expect(run!.status).toBe('running')
})

it('gives every run of a submit_jobs batch its executor job', async () => {
  const jobs = Array.from({ length: 50 }, (_, i) => ({ name: `batch-${i}`, task: 'noop' }))
  const rows = await t.sql<{ job_id: number }[]>`
    SELECT job_id FROM pgsched.submit_jobs(${t.sql.json(jobs)}::jsonb)`
  const [missing] = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pgsched.runs r
    WHERE r.job_id IN ${t.sql(rows.map((r) => r.job_id))}
      AND NOT EXISTS (
        SELECT 1 FROM graphile_worker.jobs gj
        WHERE gj.key = 'pgsched_run:' || r.id)`
  expect(missing!.n).toBe(0)
  // And the group is closed: a later submission in the same transaction is enqueued at once.
  const [after] = await t.sql.begin(async (tx) => {
    await tx`SELECT pgsched.submit_jobs(${tx.json([{ name: 'first', task: 'noop' }])}::jsonb)`
    const [job] = await tx<
      { id: number }[]
    >`SELECT pgsched.submit_job(name => 'second', task => 'noop') AS id`
    return tx<{ executor_job_id: number | null }[]>`
      SELECT (SELECT gk.id FROM graphile_worker._private_jobs gk WHERE gk.key = 'pgsched_run:' || r.id) AS executor_job_id
      FROM pgsched.runs r WHERE r.job_id = ${job!.id}`
  })
  expect(after!.executor_job_id).not.toBeNull()
})

it('answers concurrent REST submissions each on its own; a bad one fails alone, the rest run', async () => {
  const alice = await t.token('alice', 'submitter')
  const good = Array.from({ length: 12 }, (_, i) =>
    t.request('POST', '/v1/jobs', { token: alice, body: { name: `rest-${i}`, task: 'count' } }),
  )
  // Valid for the schema, refused by the database (no such job): its group is split around it.
  const bad = t.request('POST', '/v1/jobs', {
    token: alice,
    body: { name: 'bad', task: 'count', depends_on: [987654321] },
  })
  const answers = await Promise.all([...good, bad])
  expect(answers.slice(0, 12).map((r) => r.status)).toEqual(Array(12).fill(201))
  expect(answers[12]!.status).toBe(400)
  const ids = answers.slice(0, 12).map((r) => r.body.job_id as number)
  expect(new Set(ids).size).toBe(12)
  const [stored] = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pgsched.jobs WHERE name = 'bad'`
  expect(stored!.n).toBe(0)

  const seen: number[] = []
  const worker = await t.startWorker({
    concurrency: 4,
    tasks: { count: (_payload, ctx) => void seen.push(ctx.jobId) },
  })
  await waitFor(
    async () => seen.length === 12,
    15_000,
    () => `12 runs; saw ${seen.length}`,
  )
  expect(seen.sort((x, y) => x - y)).toEqual([...ids].sort((x, y) => x - y))
  await worker.stop()
})
