/**
 * Acknowledged only after a durable commit: on a PostgreSQL of this file's own whose commits wait
 * for a synchronous standby that never comes (as under Patroni's synchronous_mode_strict with the
 * replica gone), a COMMIT whose wait is cancelled returns normally with a WARNING ("committed
 * locally, but might not have been replicated"). Such a submission must get a 503, not a 201.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import { createApp } from '../src/api/app.ts'
import { createTokenVerifier, mintToken } from '../src/api/tokens.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { CommitUncertainError } from '../src/db/commit.ts'
import { GroupCommit } from '../src/db/group-commit.ts'
import { migrateAll } from '../src/runtime/bootstrap.ts'
import { TEST_SECRET, waitFor } from './helpers.ts'
import { startTemporaryPostgres } from './processes.ts'

const silentLogger = { debug() {}, info() {}, warn() {}, error() {} }

let server: Awaited<ReturnType<typeof startTemporaryPostgres>>
let admin: SqlPool
let sql: SqlPool
let app: ReturnType<typeof createApp>
let token: string

beforeAll(async () => {
  server = await startTemporaryPostgres('pgsched-syncrep')
  await migrateAll(server.url)
  admin = createSql(server.url, { max: 1 })
  sql = createSql(server.url, { max: 4 })
  app = createApp({
    sql,
    verifyToken: createTokenVerifier({ secret: TEST_SECRET }),
    logger: silentLogger,
  })
  token = await mintToken(TEST_SECRET, 'alice', ['submitter'], 3600)
}, 60_000)

afterAll(async () => {
  // A commit still waiting for the standby would keep a plain end() waiting for good.
  await sql?.end({ timeout: 1 })
  await admin?.end({ timeout: 1 })
  await server?.stop()
})

/** Commits from now on wait for a standby named `name` ('' = none: commit at once). */
async function syncStandby(name: '' | 'pgsched_absent_standby'): Promise<void> {
  // ALTER SYSTEM takes no parameters; `name` is one of two literals.
  await admin.unsafe(`ALTER SYSTEM SET synchronous_standby_names = '${name}'`)
  await admin`SELECT pg_reload_conf()`
  await waitFor(async () => {
    const [row] = await admin<
      { v: string }[]
    >`SELECT current_setting('synchronous_standby_names') AS v`
    return row!.v === name
  })
}

async function request(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await app.request(path, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  })
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies by their documented shape
    body: (await res.json()) as any,
  }
}

/** Cancels (pg_cancel_backend) each commit waiting for the standby until `answer` settles. */
async function cancelWaits<T>(answer: Promise<T>): Promise<T> {
  let settled = false
  void answer.finally(() => {
    settled = true
  })
  let cancelled = 0
  while (!settled) {
    const [row] = await admin<{ n: number }[]>`
      SELECT count(pg_cancel_backend(pid))::int AS n FROM pg_stat_activity
      WHERE wait_event = 'SyncRep'`
    cancelled += row!.n
    await new Promise((r) => setTimeout(r, 20))
  }
  expect(cancelled).toBeGreaterThan(0)
  return answer
}

async function jobsNamed(name: string): Promise<number> {
  const [row] = await admin<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pgsched.jobs WHERE name = ${name}`
  return row!.n
}

it('answers 503 (uncertain), not 201, when a submission commit stops waiting for the sync replica; the same Idempotency-Key later returns it', async () => {
  await syncStandby('pgsched_absent_standby')
  try {
    const answer = await cancelWaits(
      request('/v1/jobs', { name: 'unreplicated', command: 'true' }, { 'idempotency-key': 'k-1' }),
    )
    expect(answer.status).toBe(503)
    expect(answer.type).toBe('application/problem+json')
    expect(answer.body.type).toBe('urn:pgsched:problem:unavailable')
    expect(answer.body.detail).toMatch(/may or may not have been written/)
    expect(answer.body.detail).toMatch(/Idempotency-Key/)
    // Committed on this primary alone, once (not tried again by the group commit).
    expect(await jobsNamed('unreplicated')).toBe(1)
  } finally {
    await syncStandby('')
  }
  // The replica back: the retry with the key returns the job stored the first time.
  const retry = await request(
    '/v1/jobs',
    { name: 'unreplicated', command: 'true' },
    { 'idempotency-key': 'k-1' },
  )
  expect(retry.status).toBe(200)
  expect(await jobsNamed('unreplicated')).toBe(1)
})

it('answers 503 by itself when the sync replica does not come: the commit waits a bounded time, not for good', async () => {
  await syncStandby('pgsched_absent_standby')
  try {
    // Nobody cancels the wait: without a bound the request would wait until the breaker gave up
    // (a 503 of another kind, 'the database is unavailable').
    const answer = await request('/v1/jobs', { name: 'never-replicated', command: 'true' })
    expect(answer.status).toBe(503)
    expect(answer.body.detail).toMatch(/stopped waiting for the synchronous replica/)
    expect(answer.body.detail).toMatch(/Idempotency-Key/)
    expect(await jobsNamed('never-replicated')).toBe(1)
  } finally {
    await syncStandby('')
  }
}, 30_000)

it('answers 503 for a batch and a trigger whose commit stops waiting for the sync replica', async () => {
  const made = await request('/v1/jobs', {
    name: 'to-trigger',
    command: 'true',
    schedule: '0 0 1 1 *',
  })
  expect(made.status).toBe(201)
  await syncStandby('pgsched_absent_standby')
  try {
    const batch = await cancelWaits(
      request('/v1/jobs/batch', { jobs: [{ name: 'batch-unreplicated', command: 'true' }] }),
    )
    expect(batch.status).toBe(503)
    expect(batch.body.type).toBe('urn:pgsched:problem:unavailable')
    expect(await jobsNamed('batch-unreplicated')).toBe(1)
    const trigger = await cancelWaits(request(`/v1/jobs/${made.body.job_id}/trigger`, {}))
    expect(trigger.status).toBe(503)
  } finally {
    await syncStandby('')
  }
})

it('still answers 201 once commits are replicated (or not waited for) again', async () => {
  const answer = await request('/v1/jobs', { name: 'normal', command: 'true' })
  expect(answer.status).toBe(201)
})

it('never tries an uncertain group again, and answers each of its calls with the uncertainty', async () => {
  let writes = 0
  const commits = new GroupCommit<number, number>(sql, async (_sql, items) => {
    writes++
    if (items.length > 1) throw new CommitUncertainError('test')
    return items
  })
  const answers = await Promise.allSettled([commits.run(1), commits.run(2), commits.run(3)])
  expect(writes).toBe(1)
  for (const a of answers) {
    expect(a.status).toBe('rejected')
    expect((a as PromiseRejectedResult).reason).toBeInstanceOf(CommitUncertainError)
  }
})

it('answers a write abandoned without an outcome with the uncertainty (a 503), not an internal error', async () => {
  const stuck = new GroupCommit<number, number>(sql, () => new Promise<number[]>(() => {}), {
    settleTimeoutMs: 100,
  })
  await expect(stuck.run(1)).rejects.toBeInstanceOf(CommitUncertainError)
})
