/**
 * @module The history pruner: on the leader, at the start of its leadership and every interval,
 * creates the coming days' history partitions and drops the days past the retention
 * (pgsched.maintain_history). A day whose locks are busy is skipped and retried next pass.
 */
import { HISTORY_RETENTION_DAYS_DEFAULT } from '../core/config.ts'
import type { Logger } from '../core/types.ts'
import type { SqlPool } from '../db/client.ts'
import { historyMaintain } from '../db/queries/history.ts'
import { Periodic } from './periodic.ts'

/** Options of the pruner. */
interface PrunerOptions {
  sql: SqlPool
  logger: Logger
  /** @default HISTORY_RETENTION_DAYS_DEFAULT */
  retentionDays?: number
  /** @default 600000 (10 minutes) */
  intervalMs?: number
  /** Called after each pass, with its error if it failed. */
  onPass?: (error?: unknown) => void
}

/** The history pruner service. */
export interface Pruner {
  start(): Promise<void>
  stop(): Promise<void>
  runOnce(): Promise<void>
}

/** Maintains the history partitions while this process leads. */
export function createPruner(o: PrunerOptions): Pruner {
  const retentionDays = o.retentionDays ?? HISTORY_RETENTION_DAYS_DEFAULT
  const pass = async () => {
    const r = await historyMaintain(o.sql, { retentionDays })
    if (r.created.length + r.dropped.length + r.skipped.length + r.deleted > 0) {
      o.logger.info(
        { ...r, retentionDays },
        `scheduler: history: ${r.created.length} partitions created, ${r.dropped.length} dropped (${r.kept} runs kept), ${r.skipped.length} skipped`,
      )
    }
  }
  const failed = (e: unknown) => o.logger.warn({ err: e }, 'scheduler: history maintenance failed')
  const loop = new Periodic({
    intervalMs: o.intervalMs ?? 600_000,
    pass,
    onError: failed,
    onPass: o.onPass,
  })
  let first: Promise<void> = Promise.resolve()
  return {
    async start() {
      await loop.start()
      // At once too: the first pass of a leadership creates today's partitions if missing.
      first = loop.runOnce().catch(failed)
    },
    async stop() {
      await loop.stop()
      await first
    },
    runOnce: () => loop.runOnce(),
  }
}
