/** Group commit of REST submissions: concurrent requests share transactions, each answered alone. */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle

beforeAll(async () => {
  t = await setup()
})
afterAll(() => t.close())

it('writes concurrent submissions in shared transactions; a bad one fails alone', async () => {
  const token = await t.token('alice', 'submitter')
  const answers = await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      t.request('POST', '/v1/jobs', {
        token,
        // Passes the request schema, fails in SQL: it fails the group it is written with.
        body:
          i === 7
            ? { name: 'bad', command: 'true', schedule: '61 * * * *' }
            : { name: `ok-${i}`, command: 'true' },
      }),
    ),
  )
  expect(answers.filter((a) => a.status === 201)).toHaveLength(39)
  expect(answers[7]).toMatchObject({ status: 400, body: { errors: [{ field: 'schedule' }] } })
  const [row] = await t.sql<{ jobs: number; transactions: number }[]>`
    SELECT count(*)::int AS jobs, count(DISTINCT xmin::text)::int AS transactions
    FROM pgsched.jobs WHERE owner = 'alice'`
  expect(row!.jobs).toBe(39)
  // Fewer transactions than jobs: requests that arrived together were committed together.
  expect(row!.transactions).toBeLessThan(39)
  const ids = answers.filter((a) => a.status === 201).map((a) => a.body.job_id)
  expect(new Set(ids).size).toBe(39)
})
