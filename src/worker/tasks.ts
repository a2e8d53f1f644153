/**
 * @module Task handlers: what a `task` job runs. Register them programmatically or as modules in
 * the tasks folder (one file per task, named after it, default-exporting the handler).
 */
import { existsSync, readdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

import type { Logger } from '../core/types.ts'

/** What a task handler gets besides its payload. */
export interface TaskContext {
  runId: number
  jobId: number
  /** 1 for the first attempt; handlers use (runId, attempt) to be idempotent. */
  attempt: number
  /** Aborted when the run is cancelled or times out; long handlers should honour it. */
  signal: AbortSignal
  logger: Logger
}

/** A task handler. Its return value (JSON) is kept as the run's output; a throw fails the attempt. */
export type TaskHandler = (payload: unknown, ctx: TaskContext) => unknown

/** Task handlers by name. */
export type TaskRegistry = Readonly<Record<string, TaskHandler>>

const TASK_FILE = /^([A-Za-z0-9_.:-]+)\.(ts|js|mjs)$/

/** Loads every task module in `dir` (absent folder: none); a module must default-export a function. */
export async function loadTasksFolder(dir: string): Promise<Record<string, TaskHandler>> {
  const abs = resolve(dir)
  if (!existsSync(abs)) return {}
  const tasks: Record<string, TaskHandler> = {}
  for (const file of readdirSync(abs).sort()) {
    const m = TASK_FILE.exec(file)
    if (!m || file.endsWith('.d.ts') || file.includes('.test.')) continue
    const mod = (await import(pathToFileURL(`${abs}/${file}`).href)) as { default?: unknown }
    if (typeof mod.default !== 'function') {
      throw new Error(`task module ${abs}/${file} must default-export a handler function`)
    }
    tasks[m[1]!] = mod.default as TaskHandler
  }
  return tasks
}
