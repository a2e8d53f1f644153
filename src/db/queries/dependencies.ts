/** @module Queries that settle waiting runs: the dependency sweep and its fallback. */
import type { Sql } from '../client.ts'

/** The leader's dependency sweep: resolves up to `limit` waiting runs; returns how many moved. */
export async function resolveWaiting(sql: Sql, limit: number): Promise<number> {
  const [row] = await sql<{ n: number }[]>`SELECT pgsched.resolve_waiting(${limit}) AS n`
  return row!.n
}

/** Promotes up to `limit` waiting runs without dependency checks; `fallback` counts it. */
export async function promoteWaiting(sql: Sql, limit: number, fallback: boolean): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    SELECT pgsched.promote_waiting(${limit}, ${fallback}) AS n`
  return row!.n
}
