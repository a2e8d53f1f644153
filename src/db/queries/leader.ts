/** @module Queries for scheduler leadership: the advisory lock and the pgsched.leader report row. */
import type { SchedulerInfo } from '../../core/types.ts'
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

/**
 * The recorded leader and whether it leads now: the row outlives a leader that died, so the lock
 * itself is looked up in pg_locks (a bigint advisory key is split into classid and objid).
 */
export async function leaderStatus(sql: Sql): Promise<SchedulerInfo> {
  const [row] = await sql<SchedulerInfo[]>`
    WITH k AS (SELECT ${leaderKey(sql)} AS key)
    SELECT l.holder AS leader, l.term, l.acquired_at AS since,
      EXISTS (
        SELECT 1 FROM pg_locks pl, k
        WHERE pl.locktype = 'advisory' AND pl.granted AND pl.objsubid = 1
          AND pl.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND pl.classid = ((k.key >> 32) & 4294967295)::oid
          AND pl.objid = (k.key & 4294967295)::oid
      ) AS leading
    FROM (SELECT 1) one LEFT JOIN pgsched.leader l ON true`
  return row!
}
