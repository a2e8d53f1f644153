/**
 * @module The postgres.js client. `Sql` (a pool, a transaction or a reserved connection) is the
 * first argument of every query in queries/. Internal seam: may change without notice.
 */
import postgres from 'postgres'

/** A postgres.js pool, transaction or reserved connection. */
export type Sql = postgres.Sql | postgres.TransactionSql | postgres.ReservedSql

/** A pool, as returned by createSql. */
export type SqlPool = postgres.Sql

/** Options for createSql. */
export interface SqlOptions {
  /** Pool size. @default 10 */
  max?: number
  /** Application name shown in pg_stat_activity. @default 'pgsched' */
  applicationName?: string
  /** Seconds to wait for a connection before failing. @default 10 */
  connectTimeoutSeconds?: number
  /** Settings each session starts with (startup parameters, e.g. idle_session_timeout). */
  settings?: Record<string, string>
}

/**
 * Per pool made by createSql: how many commits so far stopped waiting for a synchronous replica
 * (see {@link unreplicatedCommits}).
 */
const unreplicated = new WeakMap<SqlPool, { count: number }>()

/**
 * Whether a notice is the WARNING PostgreSQL sends when a commit stops waiting for its
 * synchronous replica (statement_timeout, pg_cancel_backend, pg_terminate_backend): "canceling
 * wait for synchronous replication ... The transaction has already committed locally, but might
 * not have been replicated to the standby." The cancel's WARNING has no SQLSTATE of its own
 * (01000) and its text is translated (lc_messages), so any WARNING with that code, or with the
 * terminate's 57P01, counts: a COMMIT sends no other, and pgsched's SQL raises none. Counting a
 * stranger's warning only makes a commit uncertain that was not (a 503 and a retry).
 */
function isUnreplicatedCommitNotice(n: postgres.Notice): boolean {
  return n.severity === 'WARNING' && (n.code === '01000' || n.code === '57P01')
}

/**
 * How many commits on `sql`'s connections have stopped waiting for their synchronous replica
 * since it opened: committed locally, perhaps not replicated, so lost if the primary fails now.
 * Undefined for a pool not made by createSql. postgres.js hands notices over without saying which
 * connection or statement they came from; on one connection a COMMIT's notice always arrives
 * before its answer, so a count unchanged from just before a COMMIT to its answer proves that
 * COMMIT was not one of them (db/commit.ts).
 */
export function unreplicatedCommits(sql: SqlPool): number | undefined {
  return unreplicated.get(sql)?.count
}

/** Opens a pool. int8 values (ids) come back as numbers; ids never approach 2^53. */
export function createSql(url: string, options: SqlOptions = {}): SqlPool {
  const warnings = { count: 0 }
  const sql = postgres(url, {
    max: options.max ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    connection: { application_name: options.applicationName ?? 'pgsched', ...options.settings },
    // Seconds before reconnecting after the n-th failed attempt. postgres.js' default grows to
    // 20 s, so a process whose database was away for a few seconds would stall for many more
    // after it came back (heartbeats late, workers declared dead). Capped at one second.
    backoff: (n: number) => Math.min(0.05 * 2 ** n, 1),
    onnotice: (n) => {
      if (isUnreplicatedCommitNotice(n)) warnings.count++
    },
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (x: number) => String(x),
        parse: (x: string) => Number(x),
      },
    },
  })
  unreplicated.set(sql, warnings)
  return sql
}

/** SQLSTATE codes pgsched's SQL raises or relies on. */
export const PG_ERROR = Object.freeze({
  invalidParameter: '22023',
  noDataFound: 'P0002',
  objectNotInState: '55000',
  uniqueViolation: '23505',
  undefinedTable: '42P01',
  /** pgsched: submissions refused at degradation level 4. */
  degraded: 'PS503',
  /** pgsched: an SQL session over its submission rate limit. */
  rateLimited: 'PS429',
})

// Errors that mean "the database cannot be reached now", as opposed to a failing statement:
// postgres.js connection errors, socket errors, SQLSTATE class 08 (connection exception), and the
// server shutting down or starting up.
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EPIPE',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  '57P01',
  '57P02',
  '57P03',
])

// Socket errors that carry no code: workerd's ("proxy request failed, cannot connect to the
// specified address", "Network connection lost.") and Deno's (named ConnectionRefused, …).
const UNREACHABLE_NAMES = new Set([
  'ConnectionRefused',
  'ConnectionReset',
  'ConnectionAborted',
  'NotConnected',
  'BrokenPipe',
  'TimedOut',
])
const UNREACHABLE_MESSAGE =
  /cannot connect to the specified address|network connection lost|connection (?:refused|reset|closed)|socket (?:hang up|closed)/i

/** Whether `err` says the database is unreachable (down, restarting, or cut off). */
export function isDatabaseUnreachable(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown; message?: unknown } | null
  const code = e?.code
  if (typeof code === 'string') return UNREACHABLE_CODES.has(code) || code.startsWith('08')
  // A statement's error always has a SQLSTATE; only a code-less error is judged by its words.
  return (
    (typeof e?.name === 'string' && UNREACHABLE_NAMES.has(e.name)) ||
    (typeof e?.message === 'string' && UNREACHABLE_MESSAGE.test(e.message))
  )
}
