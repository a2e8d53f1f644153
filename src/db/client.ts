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
}

/** Opens a pool. int8 values (ids) come back as numbers; ids never approach 2^53. */
export function createSql(url: string, options: SqlOptions = {}): SqlPool {
  return postgres(url, {
    max: options.max ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    connection: { application_name: options.applicationName ?? 'pgsched' },
    // Seconds before reconnecting after the n-th failed attempt. postgres.js' default grows to
    // 20 s, so a process whose database was away for a few seconds would stall for many more
    // after it came back (heartbeats late, workers declared dead). Capped at one second.
    backoff: (n: number) => Math.min(0.05 * 2 ** n, 1),
    onnotice: () => {},
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (x: number) => String(x),
        parse: (x: string) => Number(x),
      },
    },
  })
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

/** Whether `err` says the database is unreachable (down, restarting, or cut off). */
export function isDatabaseUnreachable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && (UNREACHABLE_CODES.has(code) || code.startsWith('08'))
}
