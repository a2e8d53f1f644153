/**
 * Jobs submitted from SQL join the caller's trace: submit_job's and submit_jobs' traceparent
 * argument, else the session setting pgsched.traceparent (SET LOCAL once per transaction), else
 * none; a malformed one is refused and writes nothing; GET /v1/runs/{id} shows what was stored.
 */
import type postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { rowCounts, setup, type TestBundle } from './helpers.ts'

let t: TestBundle
/** The other application's connection, as a role holding only pgsched_submitter. */
let app: postgres.Sql
let token: string

beforeAll(async () => {
  t = await setup()
  const session = await t.submitterSession()
  app = session.sql
  token = await t.token(session.role, 'submitter')
})
afterAll(() => t?.close())

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER = `00-${TRACE}-00f067aa0ba902b7-01`
const OTHER = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00'

/**
 * The traceparent stored on the job and on its run, and the one GET /v1/runs/{id} shows. Jobs here
 * run in an hour or later: no worker is needed to see what was stored.
 */
async function stored(jobId: number | string) {
  const [row] = await t.sql<{ job: string | null; run: string | null; run_id: string }[]>`
    SELECT j.traceparent AS job, r.traceparent AS run, r.id AS run_id
    FROM pgsched.jobs j JOIN pgsched.runs r ON r.job_id = j.id WHERE j.id = ${jobId}`
  const res = await t.request('GET', `/v1/runs/${row!.run_id}`, { token })
  expect(res.status).toBe(200)
  return { job: row!.job, run: row!.run, shown: res.body.traceparent as string | null }
}

/** Rows a submission may have written. */
const counts = () => rowCounts(t.sql)

describe('submit_job', () => {
  it('stores the traceparent argument on the job and its run; GET /v1/runs/{id} shows it', async () => {
    const [row] = await app<{ id: string }[]>`
      SELECT pgsched.submit_job(name => 'explicit', command => 'true',
        run_at => now() + interval '1 hour', traceparent => ${CALLER}) AS id`
    const id = row!.id
    expect(await stored(id)).toEqual({ job: CALLER, run: CALLER, shown: CALLER })
  })

  it('takes SET LOCAL pgsched.traceparent for every submission of the transaction, and only that one', async () => {
    const ids = await app.begin(async (tx) => {
      // Literally what an instrumented application runs.
      await tx.unsafe(`SET LOCAL pgsched.traceparent = '${CALLER}'`)
      const [a] = await tx<{ id: string }[]>`
        SELECT pgsched.submit_job(name => 'a', command => 'true',
          run_at => now() + interval '1 hour') AS id`
      const batch = await tx<{ job_id: string }[]>`
        SELECT job_id FROM pgsched.submit_jobs(${tx.json([
          { name: 'b1', command: 'true', run_at: '2999-01-01T00:00:00Z' },
          { name: 'b2', task: 't', run_at: '2999-01-01T00:00:00Z' },
        ])}::jsonb)`
      // An explicit argument wins over the setting.
      const [c] = await tx<{ id: string }[]>`
        SELECT pgsched.submit_job(name => 'c', command => 'true',
          run_at => now() + interval '1 hour', traceparent => ${OTHER}) AS id`
      return { same: [a!.id, ...batch.map((b) => b.job_id)], explicit: c!.id }
    })
    for (const id of ids.same) {
      expect(await stored(id)).toEqual({ job: CALLER, run: CALLER, shown: CALLER })
    }
    expect(await stored(ids.explicit)).toEqual({ job: OTHER, run: OTHER, shown: OTHER })

    // The setting ended with its transaction (it now reads ''): the next run has no trace.
    const [row] = await app<{ id: string }[]>`
      SELECT pgsched.submit_job(name => 'after', command => 'true',
        run_at => now() + interval '1 hour') AS id`
    const id = row!.id
    expect(await stored(id)).toEqual({ job: null, run: null, shown: null })
  })

  it('stores none without an argument or a setting: the first attempt starts its own trace', async () => {
    const [row] = await app<{ id: string }[]>`
      SELECT pgsched.submit_job(name => 'untraced', command => 'true',
        run_at => now() + interval '1 hour') AS id`
    const id = row!.id
    expect(await stored(id)).toEqual({ job: null, run: null, shown: null })
  })

  it.each([
    ['garbage', 'not-a-traceparent'],
    ['empty', ''],
    ['version ff', `ff-${TRACE}-00f067aa0ba902b7-01`],
    ['uppercase hex', `00-${TRACE.toUpperCase()}-00F067AA0BA902B7-01`],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`],
    ['an all-zero span id', `00-${TRACE}-${'0'.repeat(16)}-01`],
    ['a short span id', `00-${TRACE}-00f067aa0ba902-01`],
    ['trailing text', `${CALLER}-extra`],
  ])(
    'refuses %s as the argument with 22023 naming traceparent, and writes nothing',
    async (_what, bad) => {
      const before = await counts()
      const single = app`
      SELECT pgsched.submit_job(name => 'bad', command => 'true', traceparent => ${bad})`
      await expect(single).rejects.toMatchObject({
        code: '22023',
        column_name: 'traceparent',
        message: expect.stringMatching(
          /^pgsched: traceparent: the argument .* is not a W3C traceparent/,
        ),
      })
      const batch = app`
      SELECT * FROM pgsched.submit_jobs(${app.json([{ name: 'bad', command: 'true' }])}::jsonb,
        traceparent => ${bad})`
      await expect(batch).rejects.toMatchObject({ code: '22023', column_name: 'traceparent' })
      expect(await counts()).toEqual(before)
    },
  )

  it('refuses a malformed session setting with 22023 naming pgsched.traceparent, and writes nothing', async () => {
    const before = await counts()
    for (const submit of [
      (tx: postgres.TransactionSql) =>
        tx`SELECT pgsched.submit_job(name => 'bad', command => 'true')`,
      (tx: postgres.TransactionSql) =>
        tx`SELECT * FROM pgsched.submit_jobs(${tx.json([{ name: 'bad', command: 'true' }])}::jsonb)`,
    ]) {
      const failed = app.begin(async (tx) => {
        await tx`SELECT set_config('pgsched.traceparent', '00-abc-def-01', true)`
        await submit(tx)
      })
      await expect(failed).rejects.toMatchObject({
        code: '22023',
        column_name: 'traceparent',
        message: expect.stringContaining(
          "the session setting pgsched.traceparent '00-abc-def-01' is not a W3C traceparent",
        ),
      })
    }
    expect(await counts()).toEqual(before)
  })
})
