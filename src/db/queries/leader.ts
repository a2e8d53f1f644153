/** @module Queries for scheduler leadership: the advisory lock and the pgsched.leader report row. */
import type { Sql } from '../client.ts'

// A 64-bit key from database + schema + purpose, so two pgsched databases on one server never
// share a leader.
const leaderKey = (sql: Sql) =>
  sql`('x' || left(md5(current_database() || '.pgsched.leader'), 16))::bit(64)::bigint`

/** Tries to take the leader lock on this (reserved) connection; true when taken. */
export async function leaderTryAcquire(sql: Sql): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`SELECT pg_try_advisory_lock(${leaderKey(sql)}) AS ok`
  return row!.ok
}

/** Releases the leader lock held by this connection. */
export async function leaderRelease(sql: Sql): Promise<void> {
  await sql`SELECT pg_advisory_unlock(${leaderKey(sql)})`
}

/** Records `holder` as leader with the next term; returns the term. */
export async function leaderRecord(sql: Sql, holder: string): Promise<number> {
  const [row] = await sql<{ term: number }[]>`
    INSERT INTO pgsched.leader (holder, term) VALUES (${holder}, 1)
    ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, term = pgsched.leader.term + 1,
      acquired_at = now()
    RETURNING term`
  return row!.term
}

/** The recorded leader, if any. */
export async function leaderGet(
  sql: Sql,
): Promise<{ holder: string; term: number; acquired_at: Date } | undefined> {
  const [row] = await sql<{ holder: string; term: number; acquired_at: Date }[]>`
    SELECT holder, term, acquired_at FROM pgsched.leader`
  return row
}
