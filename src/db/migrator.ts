/**
 * @module Applies the pgsched schema: the versioned migrations (tables, indexes, grants), then the
 * function files (functions and triggers, `CREATE OR REPLACE`) whenever one of them changed. Safe
 * when several instances start at once: the whole run is one transaction holding an advisory lock
 * keyed on the schema.
 */
import { PgschedError } from '../core/errors.ts'
import type { Sql, SqlPool } from './client.ts'
import { migrations as bundled, functionFiles as bundledFunctions } from './generated/sql.ts'

/** One numbered migration, as bundled from sql/migrations. */
export interface Migration {
  version: number
  name: string
  breaking: boolean
  sql: string
}

/** One file of functions and triggers, as bundled from sql/functions (`01_common`, …). */
export interface FunctionFile {
  name: string
  sql: string
}

/** The schema every pgsched object lives in. */
export const SCHEMA = 'pgsched'

/**
 * The unreleased 0.1.0 development chain, folded into 000001_baseline: a database migrated by it
 * holds the baseline's tables, so it is recorded as the baseline instead of being migrated again.
 */
const FOLDED_CHAIN = [
  'init',
  'sql_api_privileges',
  'workers_and_rescue',
  'dependencies_limits_degradation',
  'set_based_ticks',
  'grouped_attempts',
  'grouped_submissions',
  'job_isolation',
]

/**
 * Applies the migrations not yet applied, in order, then every function file if any of them (or
 * the migrations) changed, all in one transaction. Refuses a database that has a breaking
 * migration newer than this code knows. Returns the migration versions applied.
 */
export async function migrate(
  sql: SqlPool,
  migrations: readonly Migration[] = bundled,
  functions: readonly FunctionFile[] = bundledFunctions,
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
    await tx`
      CREATE TABLE IF NOT EXISTS pgsched.function_files (
        name text PRIMARY KEY,
        md5 text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`
    await recordFoldedChain(tx, migrations[0])
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
    await applyFunctionFiles(tx, functions, versions.length > 0)
    return versions
  })
}

/**
 * Records a database migrated by the folded development chain as the baseline. A database that
 * stopped part-way along that chain cannot be brought forward and is refused.
 */
async function recordFoldedChain(tx: Sql, baseline: Migration | undefined): Promise<void> {
  const rows = await tx<{ version: number; name: string }[]>`
    SELECT version, name FROM pgsched.migrations WHERE version <= ${FOLDED_CHAIN.length} ORDER BY version`
  if (rows[0]?.name !== FOLDED_CHAIN[0] || !baseline) return
  const chain = rows.map((r) => r.name).join(',')
  if (chain !== FOLDED_CHAIN.join(',')) {
    throw new PgschedError(
      'migration_chain_unknown',
      `database was migrated by a development build of pgsched that stopped at migration ${rows.at(-1)!.version} (${rows.at(-1)!.name}); this pgsched needs all ${FOLDED_CHAIN.length} of that chain (or a new database)`,
    )
  }
  await tx`DELETE FROM pgsched.migrations WHERE version > 1 AND version <= ${FOLDED_CHAIN.length}`
  await tx`UPDATE pgsched.migrations SET name = ${baseline.name} WHERE version = 1`
}

/**
 * Applies every function file, in order, when one of them differs from what was applied last
 * (by md5), or when `force`. All of them, not only the changed ones: a later file may depend on
 * an earlier one (triggers, SQL-language bodies), and the last one grants the functions.
 */
async function applyFunctionFiles(
  tx: Sql,
  functions: readonly FunctionFile[],
  force: boolean,
): Promise<void> {
  const names = functions.map((f) => f.name)
  const texts = functions.map((f) => f.sql)
  const [{ changed } = { changed: false }] = await tx<{ changed: boolean }[]>`
    SELECT EXISTS (
      SELECT 1 FROM unnest(${names}::text[], ${texts}::text[]) AS f (name, text)
      LEFT JOIN pgsched.function_files a ON a.name = f.name
      WHERE a.md5 IS DISTINCT FROM md5(f.text)
    ) AS changed`
  if (!changed && !force) return
  for (const f of functions) {
    // Trusted SQL shipped with pgsched, as the migrations above.
    await tx.unsafe(f.sql)
  }
  await tx`DELETE FROM pgsched.function_files WHERE NOT (name = ANY (${names}::text[]))`
  await tx`
    INSERT INTO pgsched.function_files (name, md5)
    SELECT name, md5(text) FROM unnest(${names}::text[], ${texts}::text[]) AS f (name, text)
    ON CONFLICT (name) DO UPDATE SET md5 = excluded.md5, applied_at = now()`
}

/** The latest migration version this code ships. */
export function latestMigrationVersion(migrations: readonly Migration[] = bundled): number {
  return migrations.at(-1)?.version ?? 0
}

/**
 * Returns the plain SQL of every migration and then every function file, for operators who apply
 * it with their own tool.
 */
export function migrationPlan(
  migrations: readonly Migration[] = bundled,
  functions: readonly FunctionFile[] = bundledFunctions,
): string {
  return [
    ...migrations.map((m) => `-- migration ${m.version} ${m.name}\n${m.sql}`),
    ...functions.map((f) => `-- functions ${f.name}\n${f.sql}`),
  ].join('\n')
}
