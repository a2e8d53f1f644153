/**
 * @module Node start-up shared by the CLI commands and the tests: find the database (DATABASE_URL
 * or embedded), the JWT secret (configured, or generated once in dev), and migrate.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'

import type { PgschedConfig } from '../core/config.ts'
import { PgschedError } from '../core/errors.ts'
import { createSql } from '../db/client.ts'
import { migrate } from '../db/migrator.ts'
import { migrateExecutor } from '../worker/migrate.ts'
import { startEmbeddedPostgres } from './embedded-postgres.ts'

/** The database a process uses, and how to let it go. */
export interface Database {
  url: string
  /** True when pgsched runs its own embedded server (dev mode). */
  embedded: boolean
  stop(): Promise<void>
}

/** Uses DATABASE_URL, or starts embedded PostgreSQL under the data folder. */
export async function openDatabase(config: PgschedConfig): Promise<Database> {
  if (config.databaseUrl) return { url: config.databaseUrl, embedded: false, stop: async () => {} }
  const server = await startEmbeddedPostgres({
    dataDir: config.dataDir,
    port: config.embeddedPgPort,
  })
  return { url: server.url, embedded: true, stop: server.stop }
}

/**
 * The HS256 secret: PGSCHED_JWT_SECRET, or in dev (embedded database) one generated on first
 * start and kept in the data folder. Undefined when only a JWKS is configured.
 */
export function jwtSecret(
  config: PgschedConfig,
  db: Pick<Database, 'embedded'>,
): string | undefined {
  if (config.jwtSecret) return config.jwtSecret
  if (!db.embedded) {
    if (config.jwksUrl) return undefined
    throw new PgschedError(
      'config',
      'set PGSCHED_JWT_SECRET (32+ characters) or PGSCHED_JWKS_URL; the API never runs without auth',
    )
  }
  const file = resolve(config.dataDir, 'jwt-secret')
  if (!existsSync(file)) {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o711 })
    writeFileSync(file, randomBytes(32).toString('base64url'), { mode: 0o600, flag: 'wx' })
  }
  return readFileSync(file, 'utf8').trim()
}

/** Applies Graphile Worker's migrations, then pgsched's. */
export async function migrateAll(url: string): Promise<number[]> {
  await migrateExecutor(url)
  const sql = createSql(url, { max: 1, applicationName: 'pgsched-migrate' })
  try {
    return await migrate(sql)
  } finally {
    await sql.end()
  }
}
