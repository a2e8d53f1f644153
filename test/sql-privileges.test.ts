/** Least privilege for the SQL API: an application role with pgsched_submitter only. */
import type postgres from 'postgres'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle
let app: postgres.Sql
let role: string

beforeAll(async () => {
  t = await setup()
  ;({ sql: app, role } = await t.submitterSession())
})

afterAll(() => t.close())

const code = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: { code: string }) => e.code,
  )

it('lets a pgsched_submitter submit and cancel its own jobs through the functions only', async () => {
  const [row] = await app`SELECT pgsched.submit_job(name => 'from-app', command => 'true') AS id`
  const [job] = await t.sql`SELECT owner, status FROM pgsched.jobs WHERE id = ${row!.id}`
  expect(job).toEqual({ owner: role, status: 'active' })
  expect(await code(app`SELECT * FROM pgsched.jobs`)).toBe('42501')
  expect(await code(app`UPDATE pgsched.runs SET status = 'succeeded'`)).toBe('42501')
  expect(await code(app`SELECT pgsched.run_finish(1, 1, 'w', 'succeeded')`)).toBe('42501')
  const [cancelled] = await app`SELECT pgsched.cancel_job(${row!.id}) AS ok`
  expect(cancelled!.ok).toBe(true)
})

it("refuses to submit for, or act on, another owner's jobs", async () => {
  expect(
    await code(app`SELECT pgsched.submit_job(name => 'x', command => 'true', owner => 'alice')`),
  ).toBe('42501')
  const [other] =
    await t.sql`SELECT pgsched.submit_job(name => 'alices', command => 'true', owner => 'alice') AS id`
  for (const call of [
    app`SELECT pgsched.cancel_job(${other!.id})`,
    app`SELECT pgsched.pause_job(${other!.id})`,
    app`SELECT pgsched.trigger_job(${other!.id})`,
  ]) {
    expect(await code(call)).toBe('42501')
  }
  const [job] = await t.sql`SELECT status FROM pgsched.jobs WHERE id = ${other!.id}`
  expect(job!.status).toBe('active')
})
