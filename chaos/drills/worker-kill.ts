/** @module Drill 1: SIGKILL a worker while it runs a command, then restart it. */

import { HOST } from '../infra/stack.ts'
import { until } from '../infra/supervisor.ts'
import type { DrillResult } from '../observe/types.ts'
import { adminQuery, type DrillContext, runDrill, workerNames } from './drill.ts'

/** SIGKILLs worker `w1` mid-command; its runs must be rescued and run elsewhere. */
export function workerKill(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  let killed: string[] = []
  let lostRun: string | undefined
  return runDrill(ctx, {
    number: 1,
    name: 'worker-kill',
    async inject() {
      const pid = stack.pgsched.get('w1').proc!.pid
      // Mid-command: wait until w1 runs something (the long sleeps make it likely within seconds).
      const [row] = await until(
        () =>
          adminQuery(
            stack,
            (sql) => sql<{ run_id: string }[]>`
              SELECT run_id::text FROM pgsched.run_attempts
              WHERE worker LIKE ${`${HOST}:${pid}:%`} AND outcome = 'running' LIMIT 1`,
          ).then((r) => (r.length ? r : null)),
        30_000,
        'w1 to be running a command',
      )
      lostRun = row!.run_id
      killed = await workerNames(stack, 'w1')
      await stack.pgsched.kill('w1')
      await stack.pgsched.start('w1')
      return `SIGKILL worker w1 (pid ${pid}) while it ran run ${lostRun}; restarted it`
    },
    async recovered() {
      // The dead worker declared dead, nothing left running on it, the restarted w1 heartbeating.
      const pid = stack.pgsched.get('w1').proc!.pid
      const rows = await adminQuery(
        stack,
        (sql) => sql<{ dead: boolean; held: boolean; back: boolean }[]>`
          SELECT
            (SELECT bool_and(state <> 'active') FROM pgsched.workers WHERE name = ANY(${killed})) AS dead,
            EXISTS (SELECT 1 FROM pgsched.run_attempts
                    WHERE worker = ANY(${killed}) AND outcome = 'running') AS held,
            EXISTS (SELECT 1 FROM pgsched.workers
                    WHERE name LIKE ${`${HOST}:${pid}:%`} AND state = 'active') AS back`,
      )
      return rows[0]?.dead && !rows[0].held && rows[0].back
    },
    checkOptions: () => ({ expectDead: killed }),
    notes: () => [`worker names killed: ${killed.join(', ')}; run ${lostRun} was running on it`],
  })
}
