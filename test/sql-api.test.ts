/**
 * The public SQL API (pgsched.submit_job, pgsched.cancel_job) as another application uses it: from
 * its own connection, inside its own transactions, with no pgsched code in the process.
 */
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { cronNext } from '../src/core/cron.ts'
import { rowCounts, setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
/** The other application's own pool: plain postgres.js, int8 comes back as a string. */
let app: postgres.Sql

beforeAll(async () => {
  t = await setup()
  app = postgres(t.url, {
    max: 4,
    onnotice: () => {},
    connection: { application_name: 'other-app' },
  })
})
afterAll(async () => {
  await app?.end()
  await t?.close()
})

/** Arguments of pgsched.submit_job and the SQL type each is sent as. */
const ARG_TYPES = {
  name: 'text',
  command: 'text',
  task: 'text',
  payload: 'jsonb',
  schedule: 'text',
  timezone: 'text',
  run_at: 'timestamptz',
  priority: 'integer',
  max_retries: 'integer',
  backoff_base_seconds: 'integer',
  timeout_seconds: 'integer',
  queue: 'text',
  idempotency_key: 'text',
  owner: 'text',
  traceparent: 'text',
} as const
type SubmitArgs = Partial<Record<keyof typeof ARG_TYPES, unknown>>

/** Calls pgsched.submit_job with named arguments, as an application would, and returns the id. */
async function submit(sql: postgres.Sql | postgres.TransactionSql, args: SubmitArgs) {
  const parts = Object.entries(args)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => {
      const type = ARG_TYPES[k as keyof typeof ARG_TYPES]
      // postgres.js learns that the parameter is jsonb and serializes the object itself.
      return sql`${sql.unsafe(k)} => ${v as string}::${sql.unsafe(type)}`
    })
  const list = parts.reduce((acc, p) => sql`${acc}, ${p}`)
  const [row] = await sql`SELECT pgsched.submit_job(${list}) AS id`
  return Number(row!.id)
}

/** Rows a submission may have written. */
const counts = () => rowCounts(t.sql)

const inAMinute = () => new Date(Date.now() + 60_000)

describe('pgsched.submit_job', () => {
  it('returns the job id; the job, its queued run and its executor job exist', async () => {
    const [row] = await app`
      select pgsched.submit_job(name => 'x', command => 'echo hi', run_at => now() + interval '1 minute') as id`
    const id = Number(row!.id)
    expect(id).toBeGreaterThan(0)

    const [job] = await t.sql`SELECT * FROM pgsched.jobs WHERE id = ${id}`
    expect(job).toMatchObject({
      name: 'x',
      kind: 'command',
      command: 'echo hi',
      task: null,
      schedule: null,
      timezone: 'UTC',
      priority: 5,
      max_retries: 3,
      status: 'active',
    })
    const [{ user }] = (await app`SELECT session_user AS user`) as unknown as [{ user: string }]
    expect(job!.owner).toBe(user)

    const runs = await t.sql`
      SELECT r.id, r.status, r.attempt, r.scheduled_for, now() AS now,
        (SELECT gk.id FROM graphile_worker._private_jobs gk WHERE gk.key = 'pgsched_run:' || r.id) AS executor_job_id
      FROM pgsched.runs r WHERE r.job_id = ${id}`
    expect(runs).toHaveLength(1)
    const run = runs[0]!
    expect(run).toMatchObject({ status: 'queued', attempt: 1 })
    const delay = run.scheduled_for.getTime() - run.now.getTime()
    expect(delay).toBeGreaterThan(50_000)
    expect(delay).toBeLessThanOrEqual(60_000)

    const gw = await t.sql`
      SELECT task_identifier, key, run_at, max_attempts FROM graphile_worker.jobs
      WHERE id = ${run.executor_job_id}`
    expect(gw).toHaveLength(1)
    expect(gw[0]).toMatchObject({
      task_identifier: 'pgsched_run',
      key: `pgsched_run:${run.id}`,
      max_attempts: 1,
    })
    expect(gw[0]!.run_at.getTime()).toBe(run.scheduled_for.getTime())
  })

  it('wakes the scheduler with NOTIFY pgsched_scheduler for a cron job, on commit only', async () => {
    const heard: string[] = []
    const sub = await app.listen('pgsched_scheduler', (payload) => {
      heard.push(payload)
    })
    try {
      let rolledBack = 0
      await app
        .begin(async (tx) => {
          rolledBack = await submit(tx, { name: 'cron-rb', command: 'true', schedule: '0 3 * * *' })
          throw new Error('roll back')
        })
        .catch(() => {})
      const id = await submit(app, { name: 'cron', command: 'true', schedule: '0 3 * * *' })
      await waitFor(() => heard.includes(String(id)), 5000, `NOTIFY for job ${id}`)
      expect(heard).not.toContain(String(rolledBack))
      // A scheduled job has no run until the scheduler fires a tick.
      const [runs] = await t.sql`SELECT count(*)::int AS n FROM pgsched.runs WHERE job_id = ${id}`
      expect(runs!.n).toBe(0)
    } finally {
      await sub.unlisten()
    }
  })

  it('enqueues in the caller transaction: a rollback leaves nothing, a commit leaves all three', async () => {
    const before = await counts()
    let seen: { jobId: number; runId: number; gwId: number } | undefined
    await expect(
      app.begin(async (tx) => {
        const jobId = await submit(tx, { name: 'tx', command: 'echo tx' })
        const [run] = await tx`
          SELECT r.id, (SELECT gk.id FROM graphile_worker._private_jobs gk WHERE gk.key = 'pgsched_run:' || r.id) AS executor_job_id
          FROM pgsched.runs r WHERE r.job_id = ${jobId}`
        seen = { jobId, runId: Number(run!.id), gwId: Number(run!.executor_job_id) }
        const [gw] =
          await tx`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE id = ${seen.gwId}`
        expect(gw!.n).toBe(1)
        throw new Error('the application changed its mind')
      }),
    ).rejects.toThrow('changed its mind')
    expect(seen).toBeDefined()
    const [gone] = await t.sql`
      SELECT (SELECT count(*) FROM pgsched.jobs WHERE id = ${seen!.jobId})::int AS jobs,
        (SELECT count(*) FROM pgsched.runs WHERE id = ${seen!.runId})::int AS runs,
        (SELECT count(*) FROM graphile_worker.jobs
          WHERE id = ${seen!.gwId} OR key = ${`pgsched_run:${seen!.runId}`})::int AS executor_jobs`
    expect(gone).toEqual({ jobs: 0, runs: 0, executor_jobs: 0 })
    expect(await counts()).toEqual(before)

    const committed = await app.begin(async (tx) => {
      const jobId = await submit(tx, { name: 'tx', command: 'echo tx', run_at: inAMinute() })
      await tx`SELECT 1` // the application's own work in the same transaction
      return jobId
    })
    const [kept] = await t.sql`
      SELECT j.id AS job_id, r.id AS run_id, g.id AS gw_id
      FROM pgsched.jobs j
      JOIN pgsched.runs r ON r.job_id = j.id
      JOIN graphile_worker.jobs g ON g.key = 'pgsched_run:' || r.id
      WHERE j.id = ${committed}`
    expect(kept).toBeDefined()
    expect(await counts()).toEqual({
      jobs: before.jobs + 1,
      runs: before.runs + 1,
      executor_jobs: before.executor_jobs + 1,
    })
  })
})

describe('validation', () => {
  const ok = { name: 'v', command: 'true' }
  it.each<[string, string, SubmitArgs]>([
    ['a null name', 'name', { name: null, command: 'true' }],
    ['an empty name', 'name', { name: '', command: 'true' }],
    ['a blank name', 'name', { name: '   ', command: 'true' }],
    ['both command and task', 'command', { name: 'v', command: 'true', task: 'report' }],
    ['neither command nor task', 'command', { name: 'v' }],
    ['priority 0', 'priority', { ...ok, priority: 0 }],
    ['priority 11', 'priority', { ...ok, priority: 11 }],
    ["the cron '* * *'", 'schedule', { ...ok, schedule: '* * *' }],
    ["the cron '60 * * * *'", 'schedule', { ...ok, schedule: '60 * * * *' }],
    ["the cron '* * 32 * *'", 'schedule', { ...ok, schedule: '* * 32 * *' }],
    ["the cron '*/0 * * * *'", 'schedule', { ...ok, schedule: '*/0 * * * *' }],
    ["the cron 'L * * * *'", 'schedule', { ...ok, schedule: 'L * * * *' }],
    [
      'an unknown time zone',
      'timezone',
      { ...ok, schedule: '* * * * *', timezone: 'Mars/Olympus' },
    ],
    [
      'schedule and run_at together',
      'run_at',
      { ...ok, schedule: '* * * * *', run_at: inAMinute() },
    ],
    ['a payload with a command', 'payload', { ...ok, payload: { a: 1 } }],
    ['max_retries -1', 'max_retries', { ...ok, max_retries: -1 }],
    ['timeout_seconds 0', 'timeout_seconds', { ...ok, timeout_seconds: 0 }],
    ['a queue with a space', 'queue', { ...ok, queue: 'has space' }],
    ['a task name with a space', 'task', { name: 'v', task: 'bad task' }],
  ])('refuses %s with 22023 naming %s, and writes nothing', async (_what, field, args) => {
    const before = await counts()
    const err = await submit(app, args).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(postgres.PostgresError)
    const pgErr = err as postgres.PostgresError
    expect(pgErr.code).toBe('22023')
    expect(pgErr.column_name).toBe(field)
    expect(pgErr.message).toMatch(new RegExp(`^pgsched: ${field}: \\S`))
    expect(await counts()).toEqual(before)
  })

  it.each(['*/5 * * * *', '0 9 * * mon-fri', '*/2 * * * * *', '@daily', '0 0 1 jan,jul *'])(
    'accepts the cron %s, which the scheduler can plan',
    async (schedule) => {
      const id = await submit(app, { name: 'cron-ok', command: 'true', schedule })
      const [job] =
        await t.sql`SELECT schedule, schedule_base_at FROM pgsched.jobs WHERE id = ${id}`
      expect(job!.schedule).toBe(schedule)
      expect(cronNext(schedule, 'UTC', job!.schedule_base_at).getTime()).toBeGreaterThan(
        job!.schedule_base_at.getTime(),
      )
    },
  )

  // validate_cron promises that the scheduler "never meets an expression this check let through
  // but cannot plan"; a day that no month in the expression has breaks that promise.
  it.each(['0 0 30 2 *', '0 0 31 4 *'])(
    'refuses the cron %s, which names a day its month never has',
    async (schedule) => {
      const before = await counts()
      await expect(submit(app, { name: 'never', command: 'true', schedule })).rejects.toMatchObject(
        {
          code: '22023',
          column_name: 'schedule',
        },
      )
      expect(await counts()).toEqual(before)
    },
  )
})

describe('values text and time cannot hold', () => {
  it.each(['10000-01-01T00:00:00Z', '12345-06-01T00:00:00Z'])(
    'refuses run_at %s, after 9999, with 22023 naming run_at, alone and in a batch',
    async (at) => {
      const before = await counts()
      // As literals: a JavaScript Date cannot hold a five-digit year.
      await expect(
        app`SELECT pgsched.submit_job(name => 'late', command => 'true', run_at => ${app.unsafe(`'${at}'`)})`,
      ).rejects.toMatchObject({
        code: '22023',
        column_name: 'run_at',
        message: 'pgsched: run_at: must be between 1970-01-01 and 9999-12-31',
      })
      const batch = JSON.stringify([{ name: 'late', command: 'true', run_at: at }])
      await expect(
        app`SELECT * FROM pgsched.submit_jobs(${batch}::text::jsonb)`,
      ).rejects.toMatchObject({
        code: '22023',
        column_name: 'jobs[0].run_at',
      })
      expect(await counts()).toEqual(before)
    },
  )

  it('accepts run_at on the last day of 9999', async () => {
    const [row] = await app`
      SELECT pgsched.submit_job(name => 'last', command => 'true', run_at => '9999-12-31T00:00:00Z') AS id`
    expect(Number(row!.id)).toBeGreaterThan(0)
  })

  // PostgreSQL's text and jsonb cannot hold a NUL, so it refuses one before submit_job runs: the
  // function never sees it and cannot name the argument; the error says where it was instead.
  it('refuses a NUL byte in a text argument or a batch before anything is written', async () => {
    const before = await counts()
    await expect(
      app`SELECT pgsched.submit_job(name => 'nul', command => ${'echo a\u0000b'}::text)`,
    ).rejects.toMatchObject({
      code: '22021',
      message: 'invalid byte sequence for encoding "UTF8": 0x00',
      where: 'unnamed portal parameter $1',
    })
    await expect(
      app`SELECT pgsched.submit_job(name => ${'n\u0000'}::text, command => 'true')`,
    ).rejects.toMatchObject({ code: '22021' })
    await expect(
      app`SELECT pgsched.submit_job(name => 'nul' || chr(0), command => 'true')`,
    ).rejects.toMatchObject({ code: '54000', message: 'null character not permitted' })
    const batch = JSON.stringify([{ name: 'nul\u0000', command: 'true' }])
    await expect(
      app`SELECT * FROM pgsched.submit_jobs(${batch}::text::jsonb)`,
    ).rejects.toMatchObject({
      code: '22P05',
      message: 'unsupported Unicode escape sequence',
    })
    expect(await counts()).toEqual(before)
  })
})

describe('idempotency_key', () => {
  it('returns the same job for the same owner and key, and a new job for another owner', async () => {
    const args = {
      name: 'idem',
      command: 'true',
      run_at: inAMinute(),
      idempotency_key: 'sql-key-1',
    }
    const first = await submit(app, { ...args, owner: 'alice' })
    const before = await counts()
    const again = await submit(app, { ...args, owner: 'alice' })
    expect(again).toBe(first)
    expect(await counts()).toEqual(before)
    const bobs = await submit(app, { ...args, owner: 'bob' })
    expect(bobs).not.toBe(first)
    const rows = await t.sql`
      SELECT owner, (SELECT count(*)::int FROM pgsched.runs r WHERE r.job_id = j.id) AS runs
      FROM pgsched.jobs j WHERE idempotency_key = 'sql-key-1' ORDER BY id`
    expect(rows).toEqual([
      { owner: 'alice', runs: 1 },
      { owner: 'bob', runs: 1 },
    ])
  })
})

describe('pgsched.submit_jobs, set-based', () => {
  it('keeps per-job semantics: a key repeated in the batch, a replay, limits, time zone, refs', async () => {
    const batch = (jobs: object[]) =>
      app<{ ref: string | null; job_id: number }[]>`
        SELECT * FROM pgsched.submit_jobs(${JSON.stringify(jobs)}::text::jsonb, owner => 'carol')`
    const [k] = await batch([{ name: 'k', task: 'noop', idempotency_key: 'set-1' }])
    // int8 comes back as text on this connection.
    const first = { job_id: Number(k!.job_id) }
    const before = await counts()
    const rows = await batch([
      { ref: 'a', name: 'new', task: 'noop', idempotency_key: 'set-2' },
      // The same key again in the batch: the element above's job.
      { name: 'again', task: 'noop', idempotency_key: 'set-2', depends_on: ['a'] },
      // A key already used: its job, other fields unchecked (as submit_job).
      { name: '', task: 'noop', priority: 99, idempotency_key: 'set-1' },
      { name: 'limited', command: 'true', limits: { memory_mb: 64 }, timezone: 'Asia/Kathmandu' },
      { name: 'child', task: 'noop', depends_on: ['a', first.job_id] },
    ])
    const ids = rows.map((r) => Number(r.job_id))
    expect(ids[1]).toBe(ids[0])
    expect(ids[2]).toBe(first.job_id)
    expect(new Set(ids).size).toBe(4)
    const jobs = await t.sql<{ name: string; limits: object; timezone: string; deps: number[] }[]>`
      SELECT j.name, j.limits, j.timezone,
        ARRAY(SELECT d.depends_on FROM pgsched.job_dependencies d WHERE d.job_id = j.id
              ORDER BY d.depends_on)::int[] AS deps
      FROM pgsched.jobs j WHERE j.id = ANY (${ids}::bigint[]) ORDER BY j.id`
    expect(jobs).toEqual([
      { name: 'k', limits: {}, timezone: 'UTC', deps: [] },
      { name: 'new', limits: {}, timezone: 'UTC', deps: [] },
      { name: 'limited', limits: { memory_mb: 64 }, timezone: 'Asia/Kathmandu', deps: [] },
      {
        name: 'child',
        limits: {},
        timezone: 'UTC',
        deps: [first.job_id, ids[0]!].sort((x, y) => x - y),
      },
    ])
    // Two new one-off jobs queued, the child waiting: three runs, two executor jobs.
    expect(await counts()).toEqual({
      jobs: before.jobs + 3,
      runs: before.runs + 3,
      executor_jobs: before.executor_jobs + 2,
    })
  })
})

describe('pgsched.cancel_job', () => {
  it('cancels a queued run and removes its executor job; false the second time and when unknown', async () => {
    const id = await submit(app, { name: 'cancel', command: 'true', run_at: inAMinute() })
    const [run] = await t.sql`SELECT id FROM pgsched.runs WHERE job_id = ${id}`
    const key = `pgsched_run:${run!.id}`
    const [gwBefore] =
      await t.sql`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = ${key}`
    expect(gwBefore!.n).toBe(1)

    const [first] = await app`SELECT pgsched.cancel_job(${id}) AS ok`
    expect(first!.ok).toBe(true)
    const [job] = await t.sql`SELECT status, next_run_at FROM pgsched.jobs WHERE id = ${id}`
    expect(job).toEqual({ status: 'cancelled', next_run_at: null })
    const [after] = await t.sql`SELECT status, finished_at FROM pgsched.runs WHERE id = ${run!.id}`
    expect(after!.status).toBe('cancelled')
    expect(after!.finished_at).toBeInstanceOf(Date)
    const [gwAfter] =
      await t.sql`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = ${key}`
    expect(gwAfter!.n).toBe(0)

    const [second] = await app`SELECT pgsched.cancel_job(${id}) AS ok`
    expect(second!.ok).toBe(false)
    const [unknown] = await app`SELECT pgsched.cancel_job(987654321) AS ok`
    expect(unknown!.ok).toBe(false)
  })
})

describe('REST and SQL share one implementation', () => {
  /** Every column of a job except its id and timestamps. */
  const jobRow = async (id: number) => {
    const [row] = await t.sql`
      SELECT to_jsonb(j) - 'id' - 'created_at' - 'updated_at' - 'schedule_base_at' - 'next_run_at'
        AS row
      FROM pgsched.jobs j WHERE j.id = ${id}`
    return row!.row
  }
  /** Every column of a job's runs, and of their executor jobs, except ids and timestamps. */
  const runRows = async (id: number) => {
    const rows = await t.sql`
      SELECT to_jsonb(r) - 'id' - 'job_id' - 'executor_job_id' - 'created_at' - 'updated_at' AS run,
        jsonb_build_object(
          'task_identifier', g.task_identifier, 'queue_name', g.queue_name, 'priority', g.priority,
          'run_at', g.run_at, 'max_attempts', g.max_attempts, 'flags', g.flags,
          'payload', p.payload::jsonb - 'run_id'
        ) AS executor_job
      FROM pgsched.runs r
      JOIN graphile_worker.jobs g ON g.key = 'pgsched_run:' || r.id
      JOIN graphile_worker._private_jobs p ON p.id = g.id
      WHERE r.job_id = ${id} ORDER BY r.id`
    return rows.map((r) => ({ run: r.run, executor_job: r.executor_job }))
  }

  it.each([
    [
      'a delayed one-off command',
      {
        name: 'same-once',
        command: 'echo same',
        run_at: new Date(Date.now() + 600_000).toISOString(),
        priority: 9,
        max_retries: 2,
        backoff_base_seconds: 5,
        timeout_seconds: 30,
        queue: 'lane-1',
      },
    ],
    [
      'a cron task with a payload',
      {
        name: 'same-cron',
        task: 'report.build',
        payload: { region: 'eu', days: [1, 2] },
        schedule: '0 9 * * mon-fri',
        timezone: 'Europe/Paris',
        priority: 3,
        max_retries: 0,
        backoff_base_seconds: 0,
        timeout_seconds: 600,
        queue: 'reports',
      },
    ],
  ])('%s gives equal rows either way', async (_what, body) => {
    const alice = await t.token('alice', 'submitter')
    const res = await t.request('POST', '/v1/jobs', { token: alice, body })
    expect(res.status).toBe(201)
    const viaRest = res.body.job_id as number
    const viaSql = await submit(app, {
      ...body,
      run_at: 'run_at' in body ? new Date(body.run_at) : undefined,
      owner: 'alice',
    } as SubmitArgs)
    expect(viaSql).not.toBe(viaRest)

    const restJob = await jobRow(viaRest)
    expect(restJob).toMatchObject({ owner: 'alice', name: body.name, status: 'active' })
    expect(await jobRow(viaSql)).toEqual(restJob)
    const restRuns = await runRows(viaRest)
    expect(restRuns).toHaveLength('schedule' in body ? 0 : 1)
    expect(await runRows(viaSql)).toEqual(restRuns)
  })
})

describe('execution', () => {
  it('runs a job submitted from SQL on a worker', async () => {
    const worker = await t.startWorker()
    try {
      const id = await submit(app, { name: 'from-sql', command: 'echo hi' })
      const run = await waitFor(
        async () => {
          const [r] = await t.sql`
            SELECT status, output, exit_code, attempt FROM pgsched.runs WHERE job_id = ${id}`
          return r?.status === 'succeeded' ? r : undefined
        },
        15_000,
        'the run to succeed',
      )
      expect(run).toMatchObject({ status: 'succeeded', output: 'hi\n', exit_code: 0, attempt: 1 })
      const [job] = await t.sql`SELECT status FROM pgsched.jobs WHERE id = ${id}`
      expect(job!.status).toBe('completed')
    } finally {
      await worker.stop()
    }
  })
})
