import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { renderSqlModule } from '../scripts/build-sql.ts'
import { dumpSchema } from '../scripts/dump-schema.ts'
import { PgschedError } from '../src/core/errors.ts'
import { createSql, type SqlPool } from '../src/db/client.ts'
import { functionFiles, migrations } from '../src/db/generated/sql.ts'
import { latestMigrationVersion, type Migration, migrate } from '../src/db/migrator.ts'
import { migrateAll } from '../src/runtime/bootstrap.ts'
import { migrateExecutor } from '../src/worker/migrate.ts'
import { withDatabase } from './global-setup.ts'
import { setup, type TestBundle } from './helpers.ts'

const root = fileURLToPath(new URL('..', import.meta.url))
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
  it('is up to date with sql/migrations and sql/functions', () => {
    const generated = new URL('../src/db/generated/sql.ts', import.meta.url)
    const onDisk = readFileSync(generated, 'utf8')
    expect(
      onDisk === renderSqlModule(),
      'src/db/generated/sql.ts is stale: run `npm run build:sql`',
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

describe('function files', () => {
  it('are applied again when one changes, and not when none did', async () => {
    const url = await createDatabase({ template: true })
    const sql = createSql(url, { max: 1 })
    try {
      const applied = async () =>
        (
          await sql<{ name: string; applied_at: Date }[]>`
          SELECT name, applied_at FROM pgsched.function_files ORDER BY name`
        ).map((r) => `${r.name} ${r.applied_at.toISOString()}`)
      const before = await applied()
      expect(before.map((r) => r.split(' ')[0])).toEqual(functionFiles.map((f) => f.name))
      await migrate(sql)
      expect(await applied()).toEqual(before)

      // An edit of one function, as a developer would make it in its file.
      const edited = functionFiles.map((f) =>
        f.name === '01_common'
          ? {
              ...f,
              sql: f.sql.replace("'must be between 1970-01-01 and 9999-12-31'", "'out of range'"),
            }
          : f,
      )
      expect(edited).not.toEqual(functionFiles)
      expect(await migrate(sql, migrations, edited)).toEqual([])
      const [row] = await sql<{ md5: string }[]>`
        SELECT md5 FROM pgsched.function_files WHERE name = '01_common'`
      const [want] = await sql<{ md5: string }[]>`SELECT md5(${edited[0]!.sql}) AS md5`
      expect(row!.md5).toBe(want!.md5)
      const refused = await sql`SELECT pgsched._check_time('run_at', '0001-01-01')`.catch(
        (e: Error) => e.message,
      )
      expect(refused).toBe('pgsched: run_at: out of range')
    } finally {
      await sql.end()
    }
  })
})

describe('a database from the 0.1.0 development chain', () => {
  // The last commit with the eight migrations that 000001_baseline folds.
  const BEFORE_FOLD = '1b522adec835e8bc8926d4d39f4798bb65334bf2'
  const oldFile = (path: string) =>
    execFileSync('git', ['show', `${BEFORE_FOLD}:${path}`], { cwd: root, encoding: 'utf8' })
  const oldChain = (): Migration[] =>
    execFileSync('git', ['ls-tree', '--name-only', `${BEFORE_FOLD}:sql/migrations`], {
      cwd: root,
      encoding: 'utf8',
    })
      .trim()
      .split('\n')
      .map((file) => {
        const [, version, name] = /^(\d{6})_(\w+)\.sql$/.exec(file)!
        return {
          version: Number(version),
          name: name!,
          breaking: false,
          sql: oldFile(`sql/migrations/${file}`),
        }
      })

  it('migrates to exactly the schema of a new database, its jobs kept', async () => {
    const chain = oldChain()
    expect(chain.map((m) => m.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    const oldUrl = await createDatabase()
    const freshUrl = await createDatabase()
    await migrateAll(freshUrl)
    await migrateExecutor(oldUrl)
    const old = createSql(oldUrl, { max: 1 })
    const fresh = createSql(freshUrl, { max: 1 })
    try {
      await migrate(old, chain, [])
      const [{ id } = { id: 0 }] = await old<{ id: number }[]>`
        SELECT pgsched.submit_job(name => 'kept', command => 'true') AS id`
      // Recorded as the baseline; the migrations after it run.
      expect(await migrate(old)).toEqual(migrations.slice(1).map((m) => m.version))
      expect(await old`SELECT version, name FROM pgsched.migrations ORDER BY version`).toEqual(
        migrations.map((m) => ({ version: m.version, name: m.name })),
      )
      expect(await dumpSchema(old)).toEqual(await dumpSchema(fresh))
      const [job] = await old`SELECT name, status FROM pgsched.jobs WHERE id = ${id}`
      expect(job).toEqual({ name: 'kept', status: 'active' })
      // Its run and the run's events stay, in the legacy partitions (000005); new runs get
      // day-encoded ids in the day's partition.
      const runs = await old`
        SELECT r.tableoid::regclass::text AS partition,
          (SELECT count(*)::int FROM pgsched.run_events e WHERE e.run_id = r.id) AS events
        FROM pgsched.runs r WHERE r.job_id = ${id}`
      expect(runs).toEqual([{ partition: 'pgsched.runs_legacy', events: 1 }])
      const [again] = await old<{ id: number }[]>`SELECT pgsched.trigger_job(${id}) AS id`
      expect(Math.floor(again!.id / 2 ** 32)).toBe(Math.floor(Date.now() / 86_400_000))
    } finally {
      await old.end()
      await fresh.end()
    }
  })

  it('is refused, changing nothing, when it stopped part-way along that chain', async () => {
    const url = await createDatabase()
    await migrateExecutor(url)
    const sql = createSql(url, { max: 1 })
    try {
      await migrate(sql, oldChain().slice(0, 5), [])
      const thrown = await migrate(sql).catch((e: unknown) => e)
      expect(thrown).toBeInstanceOf(PgschedError)
      expect((thrown as PgschedError).code).toBe('migration_chain_unknown')
      expect((thrown as PgschedError).message).toContain('stopped at migration 5 (set_based_ticks)')
      const rows = await sql`SELECT version FROM pgsched.migrations ORDER BY version`
      expect(rows.map((r) => r.version)).toEqual([1, 2, 3, 4, 5])
    } finally {
      await sql.end()
    }
  })
})
