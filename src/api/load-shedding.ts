/**
 * @module What the API sheds under load: submissions past an owner's rate limit (429) or at
 * degradation level 4 (503), and history beyond a page of 20 from the last day at level 2 and up.
 */
import type { Context } from 'hono'

import { RATE_LIMIT_PER_MINUTE_DEFAULT } from '../core/config.ts'
import { PgschedError } from '../core/errors.ts'
import type { SqlPool } from '../db/client.ts'
import { GroupCommit, perPool } from '../db/group-commit.ts'
import { degradationGet } from '../db/queries/degradation.ts'
import {
  type TokenRequest,
  type TokenTake,
  takeSubmissionTokensMany,
} from '../db/queries/limits.ts'
import type { AppEnv } from './middleware/auth.ts'
import { DEGRADED_RETRY_AFTER_SECONDS } from './middleware/problem.ts'
import { noteRefusal } from './middleware/telemetry.ts'

/** At degradation level 2 and above, history pages hold at most this many items… */
const HISTORY_CAP_ITEMS = 20
/** …from at most this far back. */
const HISTORY_CAP_HOURS = 24
// The level is read at most this often: a level change reaches every API process within it.
const LEVEL_TTL_MS = 1000

/** Bounds of a history query. */
interface HistoryBounds {
  limit: number
  /** Only items created after this; undefined when uncapped. */
  since?: Date
}

/**
 * One per app: it caches the degradation level briefly, across requests. What it reads and
 * writes goes through the request's pool (`c.get('sql')`); only the level, a plain value, is shared.
 */
export class LoadShedding {
  readonly #perMinute: number
  // Concurrent requests on one pool take their tokens in one statement: one round trip for a
  // burst on the shared pool.
  readonly #tokens: (sql: SqlPool) => GroupCommit<TokenRequest, TokenTake>
  #level: { value: number; at: number } | undefined

  constructor(rateLimitPerMinute = RATE_LIMIT_PER_MINUTE_DEFAULT) {
    this.#perMinute = rateLimitPerMinute
    this.#tokens = perPool(
      (sql) =>
        new GroupCommit(sql, (pool, requests) =>
          takeSubmissionTokensMany(pool, requests, rateLimitPerMinute),
        ),
    )
  }

  /**
   * The degradation level, at most LEVEL_TTL_MS old, read on `sql` when stale. Requests that find
   * it stale together each read it: no read in flight is shared, since on workerd a request may
   * not wait on another's I/O.
   */
  async level(sql: SqlPool): Promise<number> {
    const now = Date.now()
    if (!this.#level || now - this.#level.at > LEVEL_TTL_MS) {
      this.#level = { value: (await degradationGet(sql)).level, at: now }
    }
    return this.#level.value
  }

  /** Forgets the cached level (after this process changed it). */
  forget(): void {
    this.#level = undefined
  }

  /**
   * Admits `n` submissions by `user`, or throws 503 (level 4) or 429 (over the limit; nothing
   * was written). Sets the RateLimit headers on the response either way.
   */
  async admitSubmissions(c: Context<AppEnv>, user: string, n: number): Promise<void> {
    const sql = c.get('sql')
    if ((await this.level(sql)) >= 4) {
      noteRefusal(c, 'degradation')
      throw new PgschedError('unavailable', 'new submissions are refused: degradation level 4', {
        headers: { 'retry-after': String(DEGRADED_RETRY_AFTER_SECONDS) },
      })
    }
    const take = await this.#tokens(sql).run({ owner: user, n })
    const policy = `"submissions";q=${this.#perMinute};w=60`
    const reset = take.allowed ? 0 : (take.retry_after_seconds ?? 60)
    const headers = {
      'ratelimit-policy': policy,
      ratelimit: `"submissions";r=${take.remaining};t=${reset}`,
    }
    if (take.allowed) {
      for (const [k, v] of Object.entries(headers)) c.header(k, v)
      return
    }
    if (take.retry_after_seconds === null) {
      throw new PgschedError(
        'rate_limited',
        `a batch of ${n} jobs is more than the limit of ${this.#perMinute} submissions a minute`,
        { headers },
      )
    }
    throw new PgschedError(
      'rate_limited',
      `rate limit: ${this.#perMinute} submissions a minute; retry after ${take.retry_after_seconds} s`,
      { headers: { ...headers, 'retry-after': String(take.retry_after_seconds) } },
    )
  }

  /** The bounds of a history page of `limit` items; capped (and said so) from level 2. */
  async history(c: Context<AppEnv>, limit: number): Promise<HistoryBounds> {
    const level = await this.level(c.get('sql'))
    if (level < 2) return { limit }
    c.header(
      'pgsched-degradation',
      `level=${level}; history capped to ${HISTORY_CAP_ITEMS} items from the last ${HISTORY_CAP_HOURS} h`,
    )
    return {
      limit: Math.min(limit, HISTORY_CAP_ITEMS),
      since: new Date(Date.now() - HISTORY_CAP_HOURS * 3600_000),
    }
  }
}
