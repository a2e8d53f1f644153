import { readFileSync } from 'node:fs'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { renderMigrationsModule } from '../scripts/build-sql.ts'
import { PgschedError } from '../src/core/errors.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { migrations } from '../src/db/generated/migrations.ts'
import { latestMigrationVersion, migrate } from '../src/db/migrator.ts'
import { migrateAll } from '../src/runtime/bootstrap.ts'
import { withDatabase } from './global-setup.ts'
import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle
let admin: SqlPool
const created: string[] = []
let counter = 0

/** Creates an empty database (or a clone of the migrated template) that afterAll drops. */
async function createDatabase(o: { template?: boolean } = {}): Promise<string> {
  const name = `pgsched_mig_${process.pid}_${Date.now().toString(36)}_${counter++}`
  created.push(name)
  if (o.template) {
    await admin`CREATE DATABASE ${admin(name)} TEMPLATE ${admin(inject('templateDatabase'))}`
  } else {
    await admin`CREATE DATABASE ${admin(name)}`
  }
  return withDatabase(inject('databaseUrl'), name)
}

beforeAll(async () => {
  t = await setup()
  admin = createSql(inject('databaseUrl'), { max: 1 })
})
afterAll(async () => {
  await t.close()
  for (const name of created) await admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`
  await admin.end()
})

describe('the generated migrations bundle', () => {
  it('is up to date with sql/migrations', () => {
    const generated = new URL('../src/db/generated/migrations.ts', import.meta.url)
    const onDisk = readFileSync(generated, 'utf8')
    expect(
      onDisk === renderMigrationsModule(),
      'src/db/generated/migrations.ts is stale: run `npm run build:sql`',
    ).toBe(true)
  })

  it('lists migrations in increasing version order', () => {
    const versions = migrations.map((m) => m.version)
    expect(versions.length).toBeGreaterThan(0)
    expect(versions).toEqual([...new Set(versions)].sort((a, b) => a - b))
    expect(latestMigrationVersion()).toBe(versions.at(-1))
  })
})

describe('migrate', () => {
  it('applies nothing to a database that is already migrated', async () => {
    const before = await t.sql`SELECT version, applied_at FROM pgsched.migrations ORDER BY version`
    expect(await migrate(t.sql)).toEqual([])
    const after = await t.sql`SELECT version, applied_at FROM pgsched.migrations ORDER BY version`
    expect(after).toEqual(before)
    expect(after.map((r) => r.version)).toEqual(migrations.map((m) => m.version))
  })

  it('migrates a fresh database once when two processes start at the same time', async () => {
    const url = await createDatabase()
    const results = await Promise.all([migrateAll(url), migrateAll(url)])
    // One of them applied every migration; the other found them applied.
    const all = migrations.map((m) => m.version)
    expect([...results].sort((a, b) => b.length - a.length)).toEqual([all, []])
    const sql = createSql(url, { max: 1 })
    try {
      const rows = await sql<{ version: number; n: number }[]>`
        SELECT version, count(*)::int AS n FROM pgsched.migrations GROUP BY version ORDER BY version`
      expect(rows.map((r) => r.version)).toEqual(all)
      expect(rows.every((r) => r.n === 1)).toBe(true)
      // The schema is usable: the SQL API exists.
      const [fn] = await sql`SELECT to_regproc('pgsched.submit_job') IS NOT NULL AS ok`
      expect(fn!.ok).toBe(true)
      // And migrating again changes nothing.
      expect(await migrateAll(url)).toEqual([])
    } finally {
      await sql.end()
    }
  })

  it('accepts a newer migration that is not breaking, and refuses a newer breaking one', async () => {
    const url = await createDatabase({ template: true })
    const sql = createSql(url, { max: 2 })
    try {
      await sql`
        INSERT INTO pgsched.migrations (version, name, breaking)
        VALUES (999998, 'future_additive', false)`
      expect(await migrate(sql)).toEqual([])

      await sql`
        INSERT INTO pgsched.migrations (version, name, breaking)
        VALUES (999999, 'future_breaking', true)`
      let thrown: unknown
      try {
        await migrate(sql)
      } catch (e) {
        thrown = e
      }
      expect(thrown).toBeInstanceOf(PgschedError)
      expect((thrown as PgschedError).code).toBe('migration_too_new')
      expect((thrown as PgschedError).message).toContain('999999')
      // Nothing was changed, and the lock was released with the transaction.
      const rows = await sql`SELECT version FROM pgsched.migrations ORDER BY version`
      expect(rows.map((r) => r.version)).toEqual([
        ...migrations.map((m) => m.version),
        999998,
        999999,
      ])
    } finally {
      await sql.end()
    }
  })
})
