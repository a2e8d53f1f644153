/** pgsched as a library: a worker with programmatically registered task handlers. */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { loadTasksFolder, startWorker } from '../src/index.ts'
import { setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle

beforeAll(async () => {
  t = await setup()
})
afterAll(() => t.close())

it('runs a task registered with startWorker, given its payload, run id and attempt', async () => {
  const seen: unknown[] = []
  const { stop } = await startWorker({
    databaseUrl: t.url,
    concurrency: 2,
    tasks: {
      double: (payload, ctx) => {
        seen.push([ctx.runId, ctx.attempt])
        return (payload as { n: number }).n * 2
      },
    },
  })
  try {
    const [job] = await t.sql<{ id: number }[]>`
      SELECT pgsched.submit_job(name => 'lib', task => 'double', payload => '{"n": 21}') AS id`
    const run = await waitFor(async () => {
      const [r] =
        await t.sql`SELECT id, status, output FROM pgsched.runs WHERE job_id = ${job!.id} AND status = 'succeeded'`
      return r
    })
    expect(run.output).toBe('42')
    expect(seen).toEqual([[run.id, 1]])
  } finally {
    await stop()
  }
})

it('loads task handlers from the tasks folder, one module per task named after its file', async () => {
  const tasks = await loadTasksFolder('tasks')
  expect(Object.keys(tasks)).toContain('echo')
  const ctx = {
    runId: 1,
    jobId: 1,
    attempt: 1,
    signal: new AbortController().signal,
    logger: { debug() {}, info() {}, warn() {}, error() {} },
  }
  expect(tasks.echo!({ a: 1 }, ctx)).toEqual({ a: 1 })
  expect(await loadTasksFolder('no-such-folder')).toEqual({})
})
