/**
 * A leader cut off from the database: its elector reaches Postgres through a proxy that can drop
 * everything silently (a partition) or reset its connections (a primary gone, HAProxy shutting
 * sessions down). It must step down on its own, the other elector must take over once Postgres
 * has let go of the cut-off session, and never two at once.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'

import { silentLogger } from '../src/core/types.ts'
import { leaderFence } from '../src/db/queries/leader.ts'
import { Elector } from '../src/scheduler/elector.ts'
import { tickOnce } from '../src/scheduler/ticker.ts'
import { type BlackholeProxy, startBlackholeProxy } from './failover-proxy.ts'
import { setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
let proxy: BlackholeProxy
const electors: Elector[] = []

beforeAll(async () => {
  t = await setup()
})
afterEach(async () => {
  proxy?.heal()
  await Promise.all(electors.splice(0).map((e) => e.stop()))
  await proxy?.close()
})
afterAll(() => t.close())

/** An elector polling every 200 ms; `events` gets `<holder>+` when elected, `<holder>-` when demoted. */
function elector(holder: string, url: string, events: string[], others: () => Elector[]) {
  const passes = { ok: 0, failed: 0 }
  const e = new Elector({
    url,
    holder,
    pollMs: 200,
    logger: silentLogger,
    onElected: async () => {
      // Two leaders at once would show here.
      const alsoLeading = others().filter((o) => o !== e && o.isLeader).length
      events.push(alsoLeading ? `${holder}+ while another leads` : `${holder}+`)
    },
    onDemoted: async () => {
      events.push(`${holder}-`)
    },
    onPass: (error) => (error ? passes.failed++ : passes.ok++),
  })
  electors.push(e)
  return { e, passes }
}

/** The application_name of the session holding the leader lock, if any. */
async function lockHolder(): Promise<string | undefined> {
  const [row] = await t.sql<{ name: string }[]>`
    SELECT a.application_name AS name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE l.locktype = 'advisory' AND l.granted AND l.database =
      (SELECT oid FROM pg_database WHERE datname = current_database())`
  return row?.name
}

it('a partitioned leader steps down by itself; the other takes over only after, once Postgres ends the silent session', async () => {
  proxy = await startBlackholeProxy(t.url)
  const events: string[] = []
  const a = elector('a', proxy.url, events, () => electors)
  a.e.start()
  await waitFor(() => a.e.isLeader)
  const b = elector('b', t.url, events, () => electors)
  b.e.start()
  await waitFor(() => b.passes.ok >= 2)
  expect(b.e.isLeader).toBe(false)

  proxy.blackhole()
  await waitFor(() => !a.e.isLeader, 10_000, 'the cut-off leader to step down')
  // Its session is still open on the server (the proxy keeps it): only the server's
  // idle_session_timeout frees the lock.
  await waitFor(() => b.e.isLeader, 20_000, 'the other elector to take over')
  expect(events).toEqual(['a+', 'a-', 'b+'])
  expect(await lockHolder()).toBe('pgsched-leader b')

  // Cut off, a keeps campaigning and failing; healed, it finds the lock taken.
  const failed = a.passes.failed
  await waitFor(() => a.passes.failed >= failed + 3)
  proxy.heal()
  const ok = a.passes.ok
  await waitFor(() => a.passes.ok >= ok + 2, 10_000, 'the healed elector to poll again')
  expect(a.e.isLeader).toBe(false)
  expect(events).toEqual(['a+', 'a-', 'b+'])
  expect(await lockHolder()).toBe('pgsched-leader b')
}, 60_000)

it('a leader whose connection is reset steps down: its new session does not hold the lock', async () => {
  proxy = await startBlackholeProxy(t.url)
  const events: string[] = []
  const a = elector('a', proxy.url, events, () => electors)
  a.e.start()
  await waitFor(() => a.e.isLeader)
  proxy.reset()
  await waitFor(() => events.includes('a-'), 10_000, 'the leader to step down')
  // Alone, it wins the lock again on its new session.
  await waitFor(() => a.e.isLeader, 10_000, 'the elector to lead again')
  expect(events).toEqual(['a+', 'a-', 'a+'])
  expect(await lockHolder()).toBe('pgsched-leader a')
}, 30_000)

it('a leader whose connection dies silently for good campaigns again on a new one', async () => {
  proxy = await startBlackholeProxy(t.url)
  const events: string[] = []
  const a = elector('a', proxy.url, events, () => electors)
  a.e.start()
  await waitFor(() => a.e.isLeader)
  // Its old connection gets no answer until TCP gives up, minutes later; a new one goes through
  // and wins the lock once Postgres has ended the silent session.
  proxy.strandExisting()
  await waitFor(() => events.includes('a-'), 10_000, 'the leader to step down')
  await waitFor(() => a.e.isLeader, 20_000, 'the elector to lead again on a new connection')
  expect(events).toEqual(['a+', 'a-', 'a+'])
}, 40_000)

it("a tick batch commits only while its leader's elector session holds the lock", async () => {
  const token = await t.token('alice', 'submitter')
  const made = await t.request('POST', '/v1/jobs', {
    token,
    body: { name: 'every-second', command: 'true', schedule: '* * * * * *' },
  })
  expect(made.status).toBe(201)
  const runs = async () => {
    const [row] = await t.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pgsched.runs WHERE job_id = ${made.body.job_id}`
    return row!.n
  }
  const later = new Date(Date.now() + 60_000)
  const events: string[] = []
  const old = elector('old', t.url, events, () => electors)
  old.e.start()
  await waitFor(() => old.e.isLeader)
  const stale = old.e.session
  await old.e.stop()
  // A batch that reaches the database after its leader lost the lock (a partition that healed
  // after another took over) is rolled back.
  await expect(
    tickOnce(t.sql, silentLogger, 500, later, (tx) => leaderFence(tx, stale)),
  ).rejects.toThrow(/no longer held/)
  expect(await runs()).toBe(0)
  const now = elector('new', t.url, events, () => electors)
  now.e.start()
  await waitFor(() => now.e.isLeader)
  await tickOnce(t.sql, silentLogger, 500, later, (tx) => leaderFence(tx, now.e.session))
  expect(await runs()).toBe(1)
})
