/** @module Queries on pgsched.migrations. */
import { PG_ERROR, type Sql } from '../client.ts'

/** The newest applied migration version; 0 before the first migration. */
export async function migrationsLatestApplied(sql: Sql): Promise<number> {
  try {
    const [row] = await sql<
      { v: number | null }[]
    >`SELECT max(version) AS v FROM pgsched.migrations`
    return row!.v ?? 0
  } catch (e) {
    if ((e as { code?: string }).code === PG_ERROR.undefinedTable) return 0
    throw e
  }
}
