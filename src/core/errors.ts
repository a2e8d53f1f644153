/** @module The one error type of pgsched, with stable codes. */

/** Stable error codes; the API maps each to an HTTP status. */
export type ErrorCode =
  | 'validation'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'too_large'
  | 'header_too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'unavailable'
  | 'config'
  | 'migration_too_new'
  | 'migration_chain_unknown'
  | 'internal'

/** A field that failed validation, and why. */
export interface FieldError {
  field: string
  message: string
}

/** An error with a stable `code`; always pass `{ cause }` when wrapping. */
export class PgschedError extends Error {
  readonly code: ErrorCode
  readonly errors: readonly FieldError[]
  /** Response headers that go with it (Retry-After, RateLimit). */
  readonly headers: Readonly<Record<string, string>>

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      cause?: unknown
      errors?: readonly FieldError[]
      headers?: Record<string, string>
    } = {},
  ) {
    super(message, { cause: options.cause })
    this.name = 'PgschedError'
    this.code = code
    this.errors = options.errors ?? []
    this.headers = options.headers ?? {}
  }
}

/** Turns anything thrown into an Error, so catch blocks handle one shape. */
export function coerceError(e: unknown): Error {
  if (e instanceof Error) return e
  return new Error(typeof e === 'string' ? e : `non-error thrown: ${JSON.stringify(e)}`)
}
