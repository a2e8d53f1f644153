/**
 * sql/schema.sql is the snapshot of the migrated schema (scripts/dump-schema.ts): a change to the
 * migrations, or to a function's signature, shows there as a diff in review.
 */
import { existsSync, readFileSync } from 'node:fs'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { DUMP_SCHEMA_COMMAND, dumpSchema } from '../scripts/dump-schema.ts'
import { setup, type TestBundle } from './helpers.ts'

const SNAPSHOT = new URL('../sql/schema.sql', import.meta.url)

let t: TestBundle

beforeAll(async () => {
  // A clone of the template, which global-setup migrates as `pgsched migrate` does.
  t = await setup()
})
afterAll(async () => {
  await t.close()
})

describe('sql/schema.sql', () => {
  it('matches the schema the migrations build', async () => {
    const stale = `sql/schema.sql is stale: run \`${DUMP_SCHEMA_COMMAND}\` and commit the diff`
    expect(existsSync(SNAPSHOT), `sql/schema.sql is missing: run \`${DUMP_SCHEMA_COMMAND}\``).toBe(
      true,
    )
    expect(await dumpSchema(t.sql), stale).toBe(readFileSync(SNAPSHOT, 'utf8'))
  })

  it('dumps the same text twice, and a schema change changes it', async () => {
    const before = await dumpSchema(t.sql)
    expect(await dumpSchema(t.sql)).toBe(before)
    await t.sql`ALTER TABLE pgsched.jobs ADD COLUMN drift_probe text`
    await t.sql`GRANT SELECT ON pgsched.runs TO pgsched_admin`
    try {
      const after = await dumpSchema(t.sql)
      expect(after).toContain('  drift_probe text,\n')
      expect(after).toContain('GRANT SELECT ON TABLE pgsched.runs TO pgsched_admin;')
    } finally {
      await t.sql`REVOKE SELECT ON pgsched.runs FROM pgsched_admin`
      await t.sql`ALTER TABLE pgsched.jobs DROP COLUMN drift_probe`
    }
    expect(await dumpSchema(t.sql)).toBe(before)
  })
})
