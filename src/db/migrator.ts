/**
 * @module Applies the pgsched schema migrations. Safe when several instances start at once: the
 * whole run holds a transaction-scoped advisory lock keyed on the schema.
 */
import { PgschedError } from '../core/errors.ts'
import type { SqlPool } from './client.ts'
import { migrations as bundled } from './generated/migrations.ts'

/** One numbered migration, as bundled from sql/migrations. */
export interface Migration {
  version: number
  name: string
  breaking: boolean
  sql: string
}

/** The schema every pgsched object lives in. */
export const SCHEMA = 'pgsched'

/**
 * Applies the migrations not yet applied, in order, in one transaction. Refuses a database that
 * has a breaking migration newer than this code knows. Returns the versions applied.
 */
export async function migrate(
  sql: SqlPool,
  migrations: readonly Migration[] = bundled,
): Promise<number[]> {
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(('x' || left(md5(${`${SCHEMA}.migrate`}), 16))::bit(64)::bigint)`
    await tx`CREATE SCHEMA IF NOT EXISTS pgsched`
    await tx`
      CREATE TABLE IF NOT EXISTS pgsched.migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        breaking boolean NOT NULL DEFAULT false,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`
    const applied = await tx<{ version: number; breaking: boolean }[]>`
      SELECT version, breaking FROM pgsched.migrations ORDER BY version`
    const known = migrations.at(-1)?.version ?? 0
    const newerBreaking = applied.find((m) => m.version > known && m.breaking)
    if (newerBreaking) {
      throw new PgschedError(
        'migration_too_new',
        `database has breaking migration ${newerBreaking.version}, newer than this pgsched knows (${known}); upgrade pgsched`,
      )
    }
    const done = new Set(applied.map((m) => m.version))
    const versions: number[] = []
    for (const m of migrations) {
      if (done.has(m.version)) continue
      await tx`
        INSERT INTO pgsched.migrations (version, name, breaking)
        VALUES (${m.version}, ${m.name}, ${m.breaking})`
      // Migration text is trusted SQL shipped with pgsched, with no parameters: the one place
      // where sql.unsafe is right.
      await tx.unsafe(m.sql)
      versions.push(m.version)
    }
    return versions
  })
}

/** The latest migration version this code ships. */
export function latestMigrationVersion(migrations: readonly Migration[] = bundled): number {
  return migrations.at(-1)?.version ?? 0
}

/** Returns the plain SQL of every migration, for operators who apply it with their own tool. */
export function migrationPlan(migrations: readonly Migration[] = bundled): string {
  return migrations.map((m) => `-- ${m.version} ${m.name}\n${m.sql}`).join('\n')
}
