/** @module Queries on pgsched.rate_buckets: the per-owner submission rate limit. */
import type { Sql } from '../client.ts'

/** The outcome of taking tokens from an owner's submission bucket. */
export interface TokenTake {
  allowed: boolean
  remaining: number
  /** Seconds until the request would pass; null when it never can (a batch over the limit). */
  retry_after_seconds: number | null
}

/** A request for tokens: `n` from `owner`'s bucket. */
export interface TokenRequest {
  owner: string
  n: number
}

/**
 * Takes tokens for each request, in order, in one statement (one atomic upsert per request; a
 * later request sees the earlier ones' takes), as of `now` (default: the database's clock). One
 * answer per request, in order.
 */
export async function takeSubmissionTokensMany(
  sql: Sql,
  requests: TokenRequest[],
  perMinute: number,
  now?: Date,
): Promise<TokenTake[]> {
  // A bucket's state is not worth a WAL flush: this statement's own transaction commits without
  // waiting for one (a crash may forget a few tokens taken; jobs stay fully durable).
  return sql<TokenTake[]>`
    SELECT t.allowed, t.remaining, t.retry_after_seconds,
      set_config('synchronous_commit', 'off', true) AS async
    FROM unnest(${requests.map((r) => r.owner)}::text[], ${requests.map((r) => r.n)}::integer[])
      WITH ORDINALITY AS u (owner, n, i),
      LATERAL pgsched.take_submission_tokens(u.owner, u.n, ${perMinute}::integer,
        coalesce(${now ?? null}::timestamptz, now())) t
    ORDER BY u.i`
}
