/** Result writes are fenced on (run, attempt, worker): stale or repeated results change nothing. */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { runFinish, runStart } from '../src/db/queries/runs.ts'
import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle

beforeAll(async () => {
  t = await setup()
})
afterAll(() => t.close())

const ok = { outcome: 'succeeded', exitCode: 0, output: 'done\n', error: null } as const

async function queuedRun(): Promise<number> {
  const [job] = await t.sql<{ id: number }[]>`
    SELECT pgsched.submit_job(name => 'fenced', command => 'true', run_at => now() + interval '1 hour') AS id`
  const [run] = await t.sql<{ id: number }[]>`SELECT id FROM pgsched.runs WHERE job_id = ${job!.id}`
  return run!.id
}

async function events(runId: number) {
  return t.sql<{ to_status: string; error: string | null }[]>`
    SELECT to_status, error FROM pgsched.run_events WHERE run_id = ${runId} ORDER BY id`
}

it('starts an attempt once: a second worker gets nothing, a repeated start the same attempt', async () => {
  const run = await queuedRun()
  expect(await runStart(t.sql, run, 1, 'w1')).toMatchObject({
    run_id: run,
    attempt: 1,
    kind: 'command',
  })
  expect(await runStart(t.sql, run, 1, 'w2')).toBeUndefined()
  // The same worker asking again (its first answer was lost) gets the same attempt, once.
  expect(await runStart(t.sql, run, 1, 'w1')).toMatchObject({ run_id: run, attempt: 1 })
  const attempts = await t.sql`SELECT worker FROM pgsched.run_attempts WHERE run_id = ${run}`
  expect(attempts).toEqual([{ worker: 'w1' }])
  expect(await runStart(t.sql, run, 2, 'w2')).toBeUndefined()
})

it('treats a result sent twice (a lost commit answer) as already recorded', async () => {
  const run = await queuedRun()
  await runStart(t.sql, run, 1, 'w1')
  expect(await runFinish(t.sql, run, 1, 'w1', ok)).toBe('succeeded')
  expect(await runFinish(t.sql, run, 1, 'w1', ok)).toBeNull()
  expect((await events(run)).map((e) => e.to_status)).toEqual(['queued', 'running', 'succeeded'])
})

it("drops a zombie's late result, logs it, and leaves the newer attempt alone", async () => {
  const run = await queuedRun()
  await runStart(t.sql, run, 1, 'w1')
  // The attempt was taken from w1 (as a rescue does) and given to w2 as attempt 2.
  await t.sql`UPDATE pgsched.runs SET status = 'queued', attempt = 2 WHERE id = ${run}`
  await runStart(t.sql, run, 2, 'w2')
  expect(await runFinish(t.sql, run, 1, 'w1', ok)).toBeNull()
  const [state] = await t.sql`SELECT status, attempt, worker FROM pgsched.runs WHERE id = ${run}`
  expect(state).toEqual({ status: 'running', attempt: 2, worker: 'w2' })
  const dropped = (await events(run)).filter((e) => e.to_status === 'result_dropped')
  expect(dropped).toHaveLength(1)
  expect(dropped[0]!.error).toContain('late succeeded result of attempt 1 dropped')
  expect(
    await runFinish(t.sql, run, 2, 'w2', {
      ...ok,
      outcome: 'failed',
      exitCode: 1,
      error: 'exited with code 1',
    }),
  ).toBe('failed')
})
