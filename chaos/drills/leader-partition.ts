/**
 * @module
 * Drill 6: partition the leader scheduler (in its network namespace) from the database. It must
 * stop acting as leader, the other scheduler takes over, and after the heal it rejoins as follower.
 */

import { say, sleep, until } from '../infra/supervisor.ts'
import type { DrillResult } from '../observe/types.ts'
import { type DrillContext, phases, runDrill } from './drill.ts'

const STEPPED_DOWN = 'scheduler: stepped down'

/** Makes `b` (in the namespace) lead, partitions it, waits for `a` to take over, heals. */
export function leaderPartition(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  const { holdMs } = phases(ctx.quick)
  let steppedDownMs: number | null = null
  let takeoverMs: number | null = null
  return runDrill(ctx, {
    number: 6,
    name: 'leader-partition',
    async prepare() {
      if ((await stack.probes.leader()) === 'b') return
      // Hand leadership to b: a stops gracefully (releasing the lock), b takes it, a comes back.
      await stack.pgsched.stop('a')
      await until(async () => (await stack.probes.leader()) === 'b', 30_000, 'b to lead')
      await stack.pgsched.start('a')
      say('drill 6 leader-partition: b (in its namespace) leads')
    },
    async inject() {
      const b = stack.pgsched.get('b').proc!
      const before = b.log().length
      const at = Date.now()
      stack.nsScheduler.partition([stack.haproxy.port])
      say(`drill 6 leader-partition: leader b cut off from HAProxy for at least ${holdMs / 1000} s`)
      await until(
        async () => {
          if (steppedDownMs === null && b.log().slice(before).includes(STEPPED_DOWN)) {
            steppedDownMs = Date.now() - at
            say(`drill 6 leader-partition: b stepped down ${steppedDownMs} ms after the partition`)
          }
          if (takeoverMs === null && (await stack.probes.leader()) === 'a') {
            takeoverMs = Date.now() - at
            say(`drill 6 leader-partition: a leads ${takeoverMs} ms after the partition`)
          }
          return steppedDownMs !== null && takeoverMs !== null
        },
        Math.max(holdMs, 60_000),
        () =>
          `b to step down (${steppedDownMs ?? 'not yet'}) and a to lead (${takeoverMs ?? 'not yet'})`,
      ).finally(async () => {
        await sleep(Math.max(0, holdMs - (Date.now() - at)))
        stack.nsScheduler.heal()
      })
      return `partition the leader scheduler b (namespace ${stack.nsScheduler.name}) from HAProxy (nftables drop), then heal`
    },
    async recovered() {
      if (!stack.pgsched.get('b').proc!.running()) {
        throw new Error('b exited during or after the partition: it did not recover by itself')
      }
      return (await stack.probes.leader()) !== null
    },
    notes: () => [
      `partition → b logged "${STEPPED_DOWN}": ${steppedDownMs} ms`,
      `partition → a holds the leader lock: ${takeoverMs} ms (the lock goes with b's Postgres session: ended by the elector's idle_session_timeout, or at worst by HAProxy's client TCP keepalive after ~11 s)`,
    ],
  })
}
