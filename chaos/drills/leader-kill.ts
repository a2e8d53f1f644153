/** @module Drill 2: SIGKILL the leader scheduler, then restart it. */
import type { DrillResult } from '../observe/types.ts'
import { type DrillContext, runDrill } from './drill.ts'

/** SIGKILLs whichever scheduler leads; the other must take over. */
export function leaderKill(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  let killed = ''
  let tookOver = ''
  return runDrill(ctx, {
    number: 2,
    name: 'leader-kill',
    async inject() {
      killed = (await stack.probes.leader()) ?? ''
      if (killed !== 'a' && killed !== 'b')
        throw new Error(`no scheduler of ours leads (${killed})`)
      const pid = stack.pgsched.get(killed).proc!.pid
      await stack.pgsched.kill(killed)
      await stack.pgsched.start(killed)
      return `SIGKILL the leader scheduler ${killed} (pid ${pid}); restarted it`
    },
    async recovered() {
      const leader = await stack.probes.leader()
      if (leader === 'a' || leader === 'b') tookOver = leader
      return tookOver !== ''
    },
    notes: () => [`leader after the kill: ${tookOver}`],
  })
}
