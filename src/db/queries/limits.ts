/** @module Queries on pgsched.rate_buckets: the per-owner submission rate limit. */
import type { Sql } from '../client.ts'

/** The outcome of taking tokens from an owner's submission bucket. */
export interface TokenTake {
  allowed: boolean
  remaining: number
  /** Seconds until the request would pass; null when it never can (a batch over the limit). */
  retry_after_seconds: number | null
}

/** Takes `n` submission tokens from `owner`'s bucket (one atomic upsert). */
export async function takeSubmissionTokens(
  sql: Sql,
  owner: string,
  n: number,
  perMinute: number,
): Promise<TokenTake> {
  // A bucket's state is not worth a WAL flush: this statement's own transaction commits without
  // waiting for one (a crash may forget a few tokens taken; jobs stay fully durable).
  const [row] = await sql<TokenTake[]>`
    SELECT t.*, set_config('synchronous_commit', 'off', true) AS async
    FROM pgsched.take_submission_tokens(${owner}, ${n}::integer, ${perMinute}::integer) t`
  return row!
}
