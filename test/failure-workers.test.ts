/**
 * Worker failures with real processes: `pgsched worker` and `pgsched scheduler` run as children
 * (heartbeat 1 s, timeout 3 s) and are killed, stopped and told to shut down.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'

import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'

import { setup, type TestBundle, waitFor } from './helpers.ts'
import { groupRunning, type Service, startPgsched } from './processes.ts'

let t: TestBundle
let admin: string
let env: Record<string, string>
const services: Service[] = []
// Workers started by the test running now; each test ends its own.
let workers: Service[] = []
// Commands append their process group here, so that the suite can end what a killed worker left.
const dir = mkdtempSync(`${tmpdir()}/pgsched-failures-`)
const pgids = `${dir}/pgids`

beforeAll(async () => {
  t = await setup()
  admin = await t.token('ops', 'admin')
  env = {
    DATABASE_URL: t.url,
    PGSCHED_HEARTBEAT_INTERVAL_SECONDS: '1',
    PGSCHED_HEARTBEAT_TIMEOUT_SECONDS: '3',
    PGSCHED_LEADER_POLL_SECONDS: '1',
    PGSCHED_KILL_GRACE_SECONDS: '1',
    PGSCHED_LOG_LEVEL: 'info',
    // These tests are about the worker's life, not isolation (test/isolation.test.ts): commands
    // record their host process groups in a host file, which a sandboxed job could not reach.
    PGSCHED_SANDBOX: 'none',
  }
  services.push(await startPgsched('scheduler', env))
})

afterEach(async () => {
  for (const w of workers) w.child.kill('SIGCONT')
  await Promise.all(workers.map((w) => w.stop()))
  workers = []
})

afterAll(async () => {
  for (const s of services) s.child.kill('SIGKILL')
  for (const line of readFileSync(pgids, 'utf8').split('\n').filter(Boolean)) {
    try {
      process.kill(-Number(line), 'SIGKILL')
    } catch {}
  }
  rmSync(dir, { recursive: true, force: true })
  await t.close()
})

async function startWorker(extra: Record<string, string> = {}) {
  const s = await startPgsched('worker', { ...env, ...extra })
  services.push(s)
  workers.push(s)
  return s
}

/** A command job whose first attempt takes `firstSeconds` and whose later ones are quick. */
async function submit(
  name: string,
  firstSeconds: number,
  policy = 'max_retries => 2, backoff_base_seconds => 0',
) {
  const command = `echo $$ >> ${pgids}; echo "$PGSCHED_ATTEMPT"; if [ "$PGSCHED_ATTEMPT" = 1 ]; then sleep ${firstSeconds}; fi; echo "done on attempt $PGSCHED_ATTEMPT"`
  const [row] = await t.sql.unsafe(
    `SELECT pgsched.submit_job(name => $1, command => $2, ${policy}) AS id`,
    [name, command],
  )
  const [run] = await t.sql<{ id: number }[]>`SELECT id FROM pgsched.runs WHERE job_id = ${row!.id}`
  return run!.id
}

/** The process groups commands have recorded so far, oldest first. */
function recordedGroups(): string[] {
  try {
    return readFileSync(pgids, 'utf8').split('\n').filter(Boolean)
  } catch {
    return [] // no command has run yet
  }
}

const getRun = async (id: number) =>
  (await t.request('GET', `/v1/runs/${id}`, { token: admin })).body

/** Waits until run `id` has succeeded; returns it. */
async function succeeded(id: number, what: string) {
  return waitFor(
    async () => {
      const r = await getRun(id)
      return r.status === 'succeeded' && r
    },
    20_000,
    what,
  )
}

async function listWorkers() {
  return (await t.request('GET', '/v1/workers', { token: admin })).body.items as {
    name: string
    pid: number
    state: string
    error: string | null
    heartbeat_at: string
    running: number
  }[]
}

/** Waits until run `id` is running on the worker process `s`; returns that worker's name. */
async function runningOn(id: number, s: Service): Promise<string> {
  const run = await waitFor(
    async () => {
      const r = await getRun(id)
      return r.status === 'running' && r.worker?.includes(`:${s.child.pid}:`) && r
    },
    15_000,
    `run ${id} to run on worker pid ${s.child.pid}`,
  )
  return run.worker
}

it('rescues a run from a worker killed with SIGKILL: lost attempt, then success elsewhere', async () => {
  const a = await startWorker()
  // In a serial lane, whose lock the dead worker's executor held too.
  const id = await submit(
    'killed-mid-command',
    30,
    "max_retries => 2, backoff_base_seconds => 0, queue => 'lane'",
  )
  const aName = await runningOn(id, a)
  const b = await startWorker()
  a.child.kill('SIGKILL')
  await a.exited

  const run = await succeeded(id, 'the run to succeed on the other worker')
  expect(run.output).toBe('2\ndone on attempt 2\n')
  expect(run.worker).toContain(`:${b.child.pid}:`)
  const [lost, ok] = run.attempts
  expect(lost).toMatchObject({ attempt: 1, worker: aName, outcome: 'lost' })
  expect(lost.error).toMatch(/^worker lost: .* stopped sending heartbeats/)
  expect(ok).toMatchObject({ attempt: 2, outcome: 'succeeded' })

  const dead = (await listWorkers()).find((w) => w.name === aName)!
  expect(dead).toMatchObject({ state: 'dead', pid: a.child.pid })
  expect(dead.error).toMatch(/^no heartbeat for \d+ s$/)
  // Not before the timeout: 3 s of silence after its last heartbeat.
  expect(Date.parse(lost.finished_at) - Date.parse(dead.heartbeat_at)).toBeGreaterThanOrEqual(3000)
  expect((await listWorkers()).find((w) => w.pid === b.child.pid)).toMatchObject({
    state: 'active',
  })
  // Graphile Worker's locks of the dead process are released, and its stale job is gone.
  const [locked] = await t.sql`
    SELECT count(*)::int AS n FROM graphile_worker.jobs j, pgsched.workers w
    WHERE w.name = ${aName} AND j.locked_by = ANY (w.executor_ids)`
  expect(locked!.n).toBe(0)
  let left: readonly unknown[] = []
  await waitFor(
    async () => {
      left = await t.sql`SELECT * FROM graphile_worker.jobs`
      return left.length === 0
    },
    5000,
    () => `no executor job to be left behind: ${JSON.stringify(left)}`,
  )
})

it('on SIGTERM lets a short run finish, and hands a long one back for an immediate retry', async () => {
  const w = await startWorker({ PGSCHED_SHUTDOWN_GRACE_SECONDS: '2' })
  // No retries and an hour of backoff: a hand-back must use neither.
  const policy = 'max_retries => 0, backoff_base_seconds => 3600'
  const quick = await submit('quick', 0.3)
  const long = await submit('long', 30, policy)
  const name = await runningOn(long, w)
  await runningOn(quick, w).catch(() => {})

  const signalled = Date.now()
  w.child.kill('SIGTERM')
  expect(await w.exited).toBe(0)
  // Grace (2 s) + SIGTERM-to-SIGKILL (1 s) + writing the hand-back.
  expect(Date.now() - signalled).toBeLessThan(6000)

  expect(await getRun(quick)).toMatchObject({
    status: 'succeeded',
    output: '1\ndone on attempt 1\n',
  })
  const handed = await getRun(long)
  expect(handed).toMatchObject({ status: 'queued', attempt: 2 })
  expect(Date.parse(handed.available_at)).toBeLessThanOrEqual(Date.now() + 1000)
  expect(handed.attempts).toMatchObject([{ attempt: 1, worker: name, outcome: 'interrupted' }])
  expect((await listWorkers()).find((x) => x.name === name)).toMatchObject({
    state: 'stopped',
    running: 0,
  })

  await startWorker()
  const retried = await succeeded(long, 'the handed-back run to succeed on a new worker')
  expect(retried.output).toBe('2\ndone on attempt 2\n')
})

it('fences a worker that comes back from SIGSTOP: its late result does not overwrite the newer attempt', async () => {
  const a = await startWorker()
  const recorded = recordedGroups().length
  const id = await submit('paused-worker', 4)
  const aName = await runningOn(id, a)
  // Attempt 1's command is the only one running: the next process group recorded is its own.
  const pgid = Number(await waitFor(() => recordedGroups()[recorded], 5000, "attempt 1's pgid"))
  a.child.kill('SIGSTOP')

  await waitFor(
    async () => (await getRun(id)).attempts[0]?.outcome === 'lost',
    15_000,
    'the paused worker to be declared dead and its run rescued',
  )
  const b = await startWorker()
  const done = await succeeded(id, 'the rescued run to succeed on another worker')
  expect(done.worker).toContain(`:${b.child.pid}:`)
  // Attempt 1's command (4 s) finishes meanwhile; its result waits inside the stopped worker.
  await waitFor(() => !groupRunning(pgid), 10_000, "attempt 1's command to finish")
  a.child.kill('SIGCONT')

  await waitFor(
    () => a.logs().includes('the leader declared this worker dead'),
    10_000,
    () => `the resumed worker to notice it was declared dead; its output:\n${a.logs()}`,
  )
  await waitFor(
    async () => (await listWorkers()).find((w) => w.name === aName)?.state === 'active',
    10_000,
    'the resumed worker to rejoin',
  )
  const after = await getRun(id)
  expect(after).toMatchObject({ status: 'succeeded', attempt: 2, output: '2\ndone on attempt 2\n' })
  expect(after.attempts.map((x: { outcome: string }) => x.outcome)).toEqual(['lost', 'succeeded'])
  expect(after.attempts[0].worker).toBe(aName)
})

it('cancels a command that ignores SIGTERM: its process group is gone within 2 s', async () => {
  // The worker's kill grace for timeouts is 10 s; cancelling must not wait for it.
  await startWorker({ PGSCHED_KILL_GRACE_SECONDS: '10' })
  const pgidFile = `${dir}/cancel.pgid`
  const submitted = await t.request('POST', '/v1/jobs', {
    token: admin,
    body: {
      name: 'stubborn',
      command: `echo $$ >> ${pgids}; echo $$ > ${pgidFile}; trap '' TERM; sleep 30`,
    },
  })
  const job = submitted.body.job_id
  const [run] = await t.sql<{ id: number }[]>`SELECT id FROM pgsched.runs WHERE job_id = ${job}`
  await waitFor(
    async () => (await getRun(run!.id)).status === 'running',
    15_000,
    'the run to start',
  )
  const pgid = Number(
    await waitFor(() => {
      try {
        return readFileSync(pgidFile, 'utf8').trim()
      } catch {
        return ''
      }
    }),
  )
  expect(groupRunning(pgid)).toBe(true)

  const cancelled = Date.now()
  expect((await t.request('DELETE', `/v1/jobs/${job}`, { token: admin })).status).toBe(200)
  await waitFor(() => !groupRunning(pgid), 5000, 'the process group to be gone')
  expect(Date.now() - cancelled).toBeLessThan(2000)
  await waitFor(
    async () => (await getRun(run!.id)).attempts[0]?.outcome === 'cancelled',
    5000,
    'the attempt to be recorded cancelled',
  )
  expect(await getRun(run!.id)).toMatchObject({ status: 'cancelled' })
})

it('stops the same way on SIGINT: exit code 0 and the worker recorded as stopped', async () => {
  const w = await startWorker()
  w.child.kill('SIGINT')
  expect(await w.exited).toBe(0)
  expect((await listWorkers()).find((x) => x.pid === w.child.pid)).toMatchObject({
    state: 'stopped',
  })
})
