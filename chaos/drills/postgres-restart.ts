/** @module Drill 7: restart the primary's Postgres under load (`patronictl restart`). */
import type { DrillResult } from '../observe/types.ts'
import { acceptedSince, type DrillContext, runDrill } from './drill.ts'

/** Restarts the primary in place (a fast shutdown and start; no failover). */
export function postgresRestart(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  let doneAt = 0
  return runDrill(ctx, {
    number: 7,
    name: 'postgres-restart',
    async inject() {
      const name = await stack.cluster.restartPrimary()
      doneAt = Date.now()
      return `patronictl restart --force of the primary ${name}`
    },
    async recovered(w) {
      const members = await stack.cluster.cluster()
      const synced = members?.some((m) => m.role === 'sync_standby' && m.state !== 'stopped')
      const primary = await stack.cluster.primary()
      const routed = primary !== null && (await stack.haproxy.up()).join() === primary
      return synced && routed && acceptedSince(w, doneAt)
    },
  })
}
