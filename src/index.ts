/**
 * @module pgsched as a library, for Node programs in this project: register task handlers
 * programmatically, or embed the API or the scheduler in your own process.
 *
 * ```ts
 * import { startWorker } from './src/index.ts'
 * const worker = await startWorker({
 *   databaseUrl: process.env.DATABASE_URL!,
 *   tasks: { rollup: async (payload, { runId, attempt, signal }) => ({ ok: true }) },
 * })
 * // … later: await worker.stop()
 * ```
 */

import type { Logger } from './core/types.ts'
import { silentLogger } from './core/types.ts'
import { createSql } from './db/client.ts'
import { Worker } from './worker/index.ts'
import { KILL_GRACE_MS_DEFAULT, type SandboxSettings } from './worker/sandbox.ts'
import type { TaskRegistry } from './worker/tasks.ts'

export { createApp } from './api/app.ts'
export { createTokenVerifier, mintToken } from './api/tokens.ts'
export { resolveConfig } from './core/config.ts'
export { PgschedError } from './core/errors.ts'
export type { Job, Logger, Principal, Role, Run, RunStatus } from './core/types.ts'
export { createSql } from './db/client.ts'
export { jobSubmit } from './db/queries/jobs.ts'
export { migrateAll } from './runtime/bootstrap.ts'
export { Scheduler } from './scheduler/index.ts'
export { type SandboxSettings, sandboxSettingsFromConfig } from './worker/sandbox.ts'
export type { TaskContext, TaskHandler, TaskRegistry } from './worker/tasks.ts'
export { loadTasksFolder } from './worker/tasks.ts'
export { Worker }

/** Options of startWorker. */
export interface StartWorkerOptions {
  databaseUrl: string
  tasks: TaskRegistry
  /** @default 10 */
  concurrency?: number
  /** @default KILL_GRACE_MS_DEFAULT */
  killGraceMs?: number
  /** @default a logger that drops everything */
  logger?: Logger
  /** @see WorkerOptions.heartbeatIntervalMs */
  heartbeatIntervalMs?: number
  /** @see WorkerOptions.shutdownGraceMs */
  shutdownGraceMs?: number
  /** How command jobs are isolated and limited. @see WorkerOptions.sandbox */
  sandbox?: SandboxSettings
}

/** Starts a worker with programmatically registered task handlers; stop() closes it all. */
export async function startWorker(
  o: StartWorkerOptions,
): Promise<{ worker: Worker; stop(): Promise<void> }> {
  const sql = createSql(o.databaseUrl, { applicationName: 'pgsched-worker' })
  const worker = new Worker({
    sql,
    connectionString: o.databaseUrl,
    concurrency: o.concurrency ?? 10,
    killGraceMs: o.killGraceMs ?? KILL_GRACE_MS_DEFAULT,
    tasks: o.tasks,
    logger: o.logger ?? silentLogger,
    heartbeatIntervalMs: o.heartbeatIntervalMs,
    shutdownGraceMs: o.shutdownGraceMs,
    sandbox: o.sandbox,
  })
  await worker.start()
  return {
    worker,
    async stop() {
      await worker.stop()
      await sql.end({ timeout: 5 })
    },
  }
}
