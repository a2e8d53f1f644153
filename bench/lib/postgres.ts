/**
 * @module The benchmark's own PostgreSQL: embedded, in a fresh folder, with default settings
 * (durability included), and a fresh database per workload and system.
 */
import { readFileSync } from 'node:fs'

import { createSql } from '../../src/db/client.ts'
import { migrateAll } from '../../src/runtime/bootstrap.ts'
import { withDatabase } from '../../test/global-setup.ts'
import { startTemporaryPostgres } from '../../test/processes.ts'

/** The server and how to get databases on it. */
export interface BenchPostgres {
  /** URL of the `postgres` database. */
  url: string
  /** Creates an empty database; returns its URL. */
  createDatabase(name: string): Promise<string>
  /** Creates a database migrated for pgsched (Graphile Worker's schema included). */
  createPgschedDatabase(name: string): Promise<string>
  /** Server settings that matter for the figures. */
  settings(): Promise<Record<string, string>>
  /** The server's postmaster pid; its backends are its child processes (CPU accounting). */
  pids(): Promise<number[]>
  stop(): Promise<void>
}

/** Starts the server. */
export async function startBenchPostgres(): Promise<BenchPostgres> {
  const server = await startTemporaryPostgres('pgsched-bench')
  const admin = createSql(server.url, { max: 1 })
  const createDatabase = async (name: string) => {
    await admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`
    await admin`CREATE DATABASE ${admin(name)}`
    return withDatabase(server.url, name)
  }
  return {
    url: server.url,
    createDatabase,
    async createPgschedDatabase(name) {
      const url = await createDatabase(name)
      await migrateAll(url)
      return url
    },
    async settings() {
      const rows = await admin<{ name: string; setting: string; unit: string | null }[]>`
        SELECT name, setting, unit FROM pg_settings
        WHERE name IN ('server_version', 'fsync', 'synchronous_commit', 'shared_buffers',
          'wal_level', 'max_connections', 'full_page_writes')`
      return Object.fromEntries(
        rows.map((r) => [
          r.name,
          r.name === 'shared_buffers' ? `${(Number(r.setting) * 8) / 1024} MB` : r.setting,
        ]),
      )
    },
    async pids() {
      // The postmaster; its backends are its children, which processTree() adds.
      return [Number(readFileSync(`${server.dir}/pg/postmaster.pid`, 'utf8').split('\n')[0])]
    },
    async stop() {
      await admin.end()
      await server.stop()
    },
  }
}
