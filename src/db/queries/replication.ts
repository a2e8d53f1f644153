/** @module Queries about waits for the synchronous replica. */
import type { Sql } from '../client.ts'

/**
 * Cancels the waits for the synchronous replica of this role's sessions whose COMMIT has waited
 * longer than `seconds`; returns how many. The server then ends each such COMMIT with its WARNING
 * (committed on the primary only), which the committer reports as uncertain. A statement_timeout
 * cannot do this: the server disarms it before the commit's wait begins.
 */
export async function cancelReplicaWaits(sql: Sql, seconds: number): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    SELECT count(pg_cancel_backend(pid))::int AS n FROM pg_stat_activity
    WHERE wait_event = 'SyncRep' AND usename = current_user AND pid <> pg_backend_pid()
      AND query_start < clock_timestamp() - make_interval(secs => ${seconds})`
  return row!.n
}
