/**
 * @module Commits that may be acknowledged. A COMMIT that returns normally is not always durable:
 * when it waits for a synchronous replica (Patroni's `synchronous_mode_strict`) and that wait is
 * cancelled (statement_timeout, pg_cancel_backend), PostgreSQL answers COMMIT with a WARNING: the
 * transaction committed locally and may never reach the replica, so a failover loses it. When the
 * connection breaks during a COMMIT, whether it committed is unknown. Neither may be acknowledged
 * (a 201): `beginAcknowledged` turns both into a `CommitUncertainError`, a 503 whose caller
 * retries with its idempotency key. Internal seam: may change without notice.
 */
import postgres from 'postgres'

import { PgschedError } from '../core/errors.ts'
import { isDatabaseUnreachable, type SqlPool, unreplicatedCommits } from './client.ts'
import { cancelReplicaWaits } from './queries/replication.ts'

/** How long a client told that its commit is uncertain should wait before retrying. */
const UNCERTAIN_RETRY_AFTER_SECONDS = 5

/**
 * How long an acknowledged COMMIT may wait for the synchronous replica before its wait is
 * cancelled (cancelReplicaWaits) and the caller told at once that it is uncertain. After a
 * failover under synchronous_mode_strict the new primary has no replica until the old one rejoins
 * (11 s in the chaos drill): a client held that long is an outage that looks like a hang. A
 * commit that needs no replica takes milliseconds.
 */
const COMMIT_WAIT_MS = 3000

/** What a client told that its write is uncertain should do. */
export const UNCERTAIN_ADVICE =
  'the write may or may not have been written. Retry with the same Idempotency-Key, which returns the job if it was stored, or look for it before submitting again'

/**
 * A transaction whose commit was not confirmed: it may be stored (perhaps on the primary only,
 * not yet on its synchronous replica) or not. Never retried by pgsched itself, never acknowledged.
 */
export class CommitUncertainError extends PgschedError {
  constructor(why: string, options: { cause?: unknown } = {}) {
    super('unavailable', `${why}: ${UNCERTAIN_ADVICE}`, {
      cause: options.cause,
      headers: { 'retry-after': String(UNCERTAIN_RETRY_AFTER_SECONDS) },
    })
    this.name = 'CommitUncertainError'
  }
}

/**
 * `sql.begin(fn)`, resolving only when the COMMIT returned normally and no commit stopped waiting
 * for its synchronous replica while this one was in flight; otherwise a CommitUncertainError.
 *
 * Attribution is conservative: postgres.js does not say which connection a notice came from, so a
 * replication wait cancelled on any connection of the pool between this COMMIT being sent and its
 * answer makes this commit uncertain too. It cannot miss its own: on one connection the WARNING
 * arrives before the COMMIT's answer. A pool not made by createSql cannot be watched; there only
 * a broken connection during COMMIT is caught.
 */
export async function beginAcknowledged<T>(
  sql: SqlPool,
  fn: (tx: postgres.TransactionSql) => Promise<T>,
): Promise<T> {
  let before: number | undefined
  let committing = false
  let waiting: ReturnType<typeof setTimeout> | undefined
  let result: T
  try {
    result = (await sql.begin(async (tx) => {
      const out = await fn(tx)
      // postgres.js sends COMMIT once this callback has returned.
      before = unreplicatedCommits(sql)
      committing = true
      waiting = setTimeout(() => {
        // Any pool connection will do: it cancels by pid, and only waits older than ours less a
        // margin, so a commit that just began is left alone.
        cancelReplicaWaits(sql, (COMMIT_WAIT_MS * 0.8) / 1000).catch(() => {})
      }, COMMIT_WAIT_MS)
      return out
    })) as T
  } catch (e) {
    // A server error at COMMIT (a deferred constraint, a serialization failure) rolled back.
    // Anything else during COMMIT (the connection closed, the server shutting down) leaves the
    // outcome unknown.
    if (committing && !(e instanceof postgres.PostgresError && !isDatabaseUnreachable(e)))
      throw new CommitUncertainError('the connection broke while committing', { cause: e })
    throw e
  } finally {
    if (waiting !== undefined) clearTimeout(waiting)
  }
  if (unreplicatedCommits(sql) !== before)
    throw new CommitUncertainError(
      'the commit stopped waiting for the synchronous replica (committed on the primary only)',
    )
  return result
}
