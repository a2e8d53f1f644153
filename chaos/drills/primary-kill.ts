/** @module Drill 3: SIGKILL the Postgres primary's postmaster; Patroni fails over to the sync replica. */

import { say } from '../infra/supervisor.ts'
import type { DrillResult } from '../observe/types.ts'
import { acceptedSince, type DrillContext, runDrill } from './drill.ts'

/** SIGKILLs the primary; measures the kill → new primary answering through HAProxy. */
export function primaryKill(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  let old = ''
  let killedAt = 0
  let routedMs: number | null = null
  let healthyMs: number | null = null
  return runDrill(ctx, {
    number: 3,
    name: 'primary-kill',
    async inject() {
      old = await stack.cluster.killPrimary()
      killedAt = Date.now()
      return `SIGKILL the postmaster of the Postgres primary ${old}`
    },
    async recovered(w) {
      if (routedMs === null) {
        const primary = await stack.cluster.primary()
        const up = await stack.haproxy.up()
        if (primary && primary !== old && up.length === 1 && up[0] === primary) {
          routedMs = Date.now() - killedAt
          say(
            `drill 3 primary-kill: new primary ${primary} routed by HAProxy ${routedMs} ms after the kill`,
          )
        }
        return false
      }
      if (healthyMs === null) {
        const members = await stack.cluster.cluster()
        if (members?.some((m) => m.role === 'sync_standby' && m.name === old)) {
          healthyMs = Date.now() - killedAt
          say(`drill 3 primary-kill: ${old} back as sync standby ${healthyMs} ms after the kill`)
        }
      }
      return healthyMs !== null && acceptedSince(w, killedAt + (routedMs ?? 0))
    },
    notes: () => [
      `kill → new primary routed by HAProxy: ${routedMs} ms`,
      `kill → old primary back as sync standby (writes resume under synchronous_mode_strict): ${healthyMs} ms`,
    ],
  })
}
