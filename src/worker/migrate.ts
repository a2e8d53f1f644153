/** @module Applies Graphile Worker's own migrations (the executor's schema, graphile_worker). */
import { runMigrations } from 'graphile-worker'

import { makeWorkerPreset } from './preset.ts'

/** Migrates the graphile_worker schema; safe to run concurrently and repeatedly. */
export async function migrateExecutor(connectionString: string): Promise<void> {
  await runMigrations({
    preset: makeWorkerPreset({ connectionString, concurrency: 1 }),
    logger: undefined,
  })
}
