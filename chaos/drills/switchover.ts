/** @module Drill 4: a planned switchover (`patronictl switchover`). */
import type { DrillResult } from '../observe/types.ts'
import { acceptedSince, type DrillContext, runDrill } from './drill.ts'

/** Switches the primary over to the sync standby. */
export function switchover(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  let to = ''
  let doneAt = 0
  return runDrill(ctx, {
    number: 4,
    name: 'switchover',
    async inject() {
      const [from, candidate] = await stack.cluster.switchover()
      to = candidate
      doneAt = Date.now()
      return `patronictl switchover from ${from} to ${candidate}`
    },
    async recovered(w) {
      const members = await stack.cluster.cluster()
      const synced = members?.some((m) => m.role === 'sync_standby')
      const routed = (await stack.haproxy.up()).join() === to
      return synced && routed && acceptedSince(w, doneAt)
    },
  })
}
