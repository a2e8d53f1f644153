/** @module Drill 5: partition a worker (in its network namespace) from the database, then heal. */

import { HOST } from '../infra/stack.ts'
import { say, sleep } from '../infra/supervisor.ts'
import type { DrillResult } from '../observe/types.ts'
import { adminQuery, type DrillContext, phases, runDrill, workerNames } from './drill.ts'

/**
 * Drops all traffic between worker `w2` and HAProxy for longer than the heartbeat timeout (so it is
 * declared dead and its runs rescued), then heals: it must rejoin by itself, without a restart.
 */
export function workerPartition(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  const { holdMs } = phases(ctx.quick)
  let names: string[] = []
  let healedAt = 0
  const pid = () => stack.pgsched.get('w2').proc!.pid
  return runDrill(ctx, {
    number: 5,
    name: 'worker-partition',
    async inject() {
      names = await workerNames(stack, 'w2')
      stack.nsWorker.partition([stack.haproxy.port])
      say(`drill 5 worker-partition: w2 cut off from HAProxy for ${holdMs / 1000} s`)
      await sleep(holdMs)
      stack.nsWorker.heal()
      healedAt = Date.now()
      return `partition worker w2 (pid ${pid()}, namespace ${stack.nsWorker.name}) from HAProxy for ${holdMs / 1000} s (nftables drop), then heal`
    },
    async recovered() {
      if (!stack.pgsched.get('w2').proc!.running()) {
        throw new Error('w2 exited during or after the partition: it did not recover by itself')
      }
      const rows = await adminQuery(
        stack,
        (sql) => sql<{ name: string }[]>`
          SELECT name FROM pgsched.workers
          WHERE name LIKE ${`${HOST}:${pid()}:%`} AND state = 'active'
            AND heartbeat_at > to_timestamp(${healedAt / 1000})`,
      )
      return rows.length > 0
    },
    async checkOptions() {
      return { expectDead: [...new Set([...names, ...(await workerNames(stack, 'w2'))])] }
    },
    async notes() {
      const rows = await adminQuery(
        stack,
        (sql) => sql<{ name: string; state: string }[]>`
          SELECT name, state FROM pgsched.workers WHERE name LIKE ${`${HOST}:${pid()}:%`}`,
      )
      return [`w2 worker rows after heal: ${rows.map((r) => `${r.name} ${r.state}`).join(', ')}`]
    },
  })
}
