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

/** Releases every hold of the leader lock by this session (the lock is re-entrant). */
export async function leaderReleaseAll(sql: Sql): Promise<void> {
  await sql`
    SELECT pg_advisory_unlock(${leaderKey(sql)})
    FROM generate_series(1, (
      SELECT count(*) FROM pg_locks
      WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND ${lockMatches(sql)}))`
}

/** Whether this session holds the leader lock now. */
export async function leaderHeld(sql: Sql): Promise<boolean> {
  const [row] = await sql<{ held: boolean }[]>`
    SELECT EXISTS (
      SELECT 1 FROM pg_locks
      WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted AND ${lockMatches(sql)}
    ) AS held`
  return row!.held
}

// A pg_locks row of the leader lock: a bigint advisory key shows as classid (high 32 bits),
// objid (low 32 bits) and objsubid 1, in the current database.
const lockMatches = (sql: Sql) => sql`
  objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = ((${leaderKey(sql)} >> 32) & 4294967295)::oid
  AND objid = (${leaderKey(sql)} & 4294967295)::oid`

/**
 * Records `holder` as leader with the next term; returns the term and the backend pid of this
 * session (the one holding the lock, for leaderFence).
 */
export async function leaderRecord(
  sql: Sql,
  holder: string,
): Promise<{ term: number; pid: number }> {
  const [row] = await sql<{ term: number; pid: number }[]>`
    INSERT INTO pgsched.leader (holder, term) VALUES (${holder}, 1)
    ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, term = pgsched.leader.term + 1,
      acquired_at = now()
    RETURNING term, pg_backend_pid() AS pid`
  return row!
}

/**
 * Throws unless backend `pid` (a leader's elector session) holds the leader lock now: run last in
 * a leader-only transaction, it rolls back the work of a leader that lost its lock while the
 * transaction was on its way (a partition that healed after another took over).
 */
export async function leaderFence(sql: Sql, pid: number | undefined): Promise<void> {
  const [row] = await sql<{ held: boolean }[]>`
    SELECT EXISTS (
      SELECT 1 FROM pg_locks
      WHERE pid = ${pid ?? 0} AND locktype = 'advisory' AND granted AND ${lockMatches(sql)}
    ) AS held`
  if (!row!.held)
    throw new Error('the leader lock is no longer held by this scheduler: not leading any more')
}

/**
 * The recorded leader and whether it leads now: the row outlives a leader that died, so the lock
 * itself is looked up in pg_locks.
 */
export async function leaderStatus(sql: Sql): Promise<SchedulerInfo> {
  const [row] = await sql<SchedulerInfo[]>`
    SELECT l.holder AS leader, l.term, l.acquired_at AS since,
      EXISTS (
        SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND ${lockMatches(sql)}
      ) AS leading
    FROM (SELECT 1) one LEFT JOIN pgsched.leader l ON true`
  return row!
}
