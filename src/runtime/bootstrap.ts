/**
 * @module Node start-up shared by the CLI commands and the tests: find the database (DATABASE_URL
 * or embedded), the JWT secret (configured, or generated once in dev), and migrate.
 */
import { randomBytes } from 'node:crypto'
import { resolve } from 'node:path'

import { DATA_DIR_DEFAULT, type PgschedConfig } from '../core/config.ts'
import { PgschedError } from '../core/errors.ts'
import { createSql } from '../db/client.ts'
import { migrate } from '../db/migrator.ts'
import { migrateExecutor } from '../worker/migrate.ts'
import {
  embeddedDataDir,
  embeddedUrl,
  readEmbeddedPassword,
  readOrCreateSecret,
  runningPort,
  startEmbeddedPostgres,
} from './embedded-postgres.ts'

/** The database a process uses, and how to let it go. */
export interface Database {
  url: string
  /** True when pgsched runs its own embedded server (dev mode). */
  embedded: boolean
  /** The data folder of the embedded server, absolute; undefined with DATABASE_URL. */
  dataDir?: string
  stop(): Promise<void>
}

/**
 * The data folder of the embedded server: PGSCHED_DATA_DIR (default `.pgsched`), made absolute,
 * or as root, when the `postgres` user cannot reach the default one, a folder of its own under
 * /var/lib/pgsched (`movedFrom` and `blockedAt` then say why). Creates nothing.
 */
function dataFolder(config: PgschedConfig): {
  dir: string
  movedFrom?: string
  blockedAt?: string
} {
  return embeddedDataDir(config.dataDir, config.dataDir === DATA_DIR_DEFAULT)
}

/**
 * Uses DATABASE_URL, or starts embedded PostgreSQL in the data folder. `onNotice` hears what is
 * worth printing about it (a data folder moved, binaries copied).
 */
export async function openDatabase(
  config: PgschedConfig,
  onNotice?: (line: string) => void,
): Promise<Database> {
  if (config.databaseUrl) return { url: config.databaseUrl, embedded: false, stop: async () => {} }
  const { dir, movedFrom, blockedAt } = dataFolder(config)
  if (movedFrom) {
    onNotice?.(
      `the postgres user, which runs the embedded server as root, cannot enter ${blockedAt}, so the data goes to ${dir} instead of ${movedFrom} (set PGSCHED_DATA_DIR to choose another folder)`,
    )
  }
  const server = await startEmbeddedPostgres({
    dataDir: dir,
    port: config.embeddedPgPort,
    onNotice,
  })
  return { url: server.url, embedded: true, dataDir: dir, stop: server.stop }
}

/**
 * The URL `pgsched sql-url` prints: DATABASE_URL, or the embedded server's, from the password in
 * the data folder and the port of the server running there, or else the configured port. Starts
 * nothing.
 */
export function sqlUrl(config: PgschedConfig): string {
  if (config.databaseUrl) return config.databaseUrl
  const { dir } = dataFolder(config)
  const password = readEmbeddedPassword(dir)
  if (!password) {
    throw new PgschedError(
      'config',
      `there is no embedded database in ${dir}: start one with npx pgsched start (from the project folder, or with PGSCHED_DATA_DIR set to its data folder)`,
    )
  }
  return embeddedUrl(password, runningPort(dir) ?? config.embeddedPgPort)
}

/** An HS256 secret and where it came from. */
interface JwtSecret {
  value: string
  /** `PGSCHED_JWT_SECRET`, or the file it was read from. */
  source: string
  /** Generated just now: the first start of this data folder. */
  created: boolean
}

/**
 * The HS256 secret: PGSCHED_JWT_SECRET, or in dev (embedded database) the one kept in the data
 * folder, generated on first start when `create` (the API does; `pgsched token` never invents
 * one, which the server would not know). Undefined when only a JWKS is configured.
 */
export function jwtSecret(
  config: PgschedConfig,
  db: Pick<Database, 'embedded' | 'dataDir'>,
  { create }: { create: boolean },
): JwtSecret | undefined {
  if (config.jwtSecret)
    return { value: config.jwtSecret, source: 'PGSCHED_JWT_SECRET', created: false }
  if (!db.embedded) {
    if (config.jwksUrl) return undefined
    throw new PgschedError(
      'config',
      'set PGSCHED_JWT_SECRET (32+ characters) or PGSCHED_JWKS_URL; the API never runs without auth',
    )
  }
  const file = resolve(db.dataDir ?? dataFolder(config).dir, 'jwt-secret')
  const secret = readOrCreateSecret(
    file,
    create ? () => randomBytes(32).toString('base64url') : undefined,
  )
  if (!secret) {
    throw new PgschedError(
      'config',
      `no JWT secret: ${file} does not exist (pgsched start creates it in its data folder); run this from the project folder, set PGSCHED_DATA_DIR to the data folder of the server, or set PGSCHED_JWT_SECRET to its secret`,
    )
  }
  return { ...secret, source: file }
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
