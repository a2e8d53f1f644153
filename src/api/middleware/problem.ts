/** @module Errors as RFC 9457 application/problem+json, from one onError handler. */
import type { Context, ErrorHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type { z } from 'zod'

import { type ErrorCode, type FieldError, PgschedError } from '../../core/errors.ts'
import type { Logger } from '../../core/types.ts'
import { isDatabaseUnreachable, PG_ERROR } from '../../db/client.ts'
import { UNCERTAIN_ADVICE } from '../../db/commit.ts'
import { noteRefusal } from './telemetry.ts'

const STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  validation: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  header_too_large: 431,
  unsupported_media_type: 415,
  rate_limited: 429,
  unavailable: 503,
  config: 500,
  migration_too_new: 500,
  migration_chain_unknown: 500,
  internal: 500,
}

const TITLE: Record<ErrorCode, string> = {
  validation: 'Invalid request',
  unauthorized: 'Unauthorized',
  forbidden: 'Forbidden',
  not_found: 'Not found',
  conflict: 'Conflict',
  too_large: 'Content too large',
  header_too_large: 'Request header fields too large',
  unsupported_media_type: 'Unsupported media type',
  rate_limited: 'Too many requests',
  unavailable: 'Service unavailable',
  config: 'Server misconfigured',
  migration_too_new: 'Server misconfigured',
  migration_chain_unknown: 'Server misconfigured',
  internal: 'Internal error',
}

/** How long a client refused at degradation level 4 is told to wait. */
export const DEGRADED_RETRY_AFTER_SECONDS = 30

/** Writes a problem+json response. */
export function problem(
  c: Context,
  code: ErrorCode,
  detail: string,
  errors?: readonly FieldError[],
): Response {
  const status = STATUS[code]
  const body = {
    type: `urn:pgsched:problem:${code}`,
    title: TITLE[code],
    status,
    detail,
    ...(errors?.length ? { errors } : {}),
  }
  const headers: Record<string, string> = { 'content-type': 'application/problem+json' }
  if (code === 'unauthorized') headers['www-authenticate'] = 'Bearer'
  return c.body(JSON.stringify(body), status, headers)
}

/** 503 problem+json: the database cannot be reached; retry after `retryAfterSeconds`. */
export function databaseUnavailable(c: Context, retryAfterSeconds: number): Response {
  c.header('retry-after', String(retryAfterSeconds))
  return problem(c, 'unavailable', 'the database is unavailable; retry shortly')
}

/**
 * 503 for a write the API stopped waiting for after `timeoutMs`: unlike a refusal, it may still
 * commit, so the client is told to retry with its idempotency key rather than that nothing
 * happened.
 */
export function writeTimedOut(c: Context, timeoutMs: number, retryAfterSeconds: number): Response {
  c.header('retry-after', String(retryAfterSeconds))
  return problem(
    c,
    'unavailable',
    `the database did not answer within ${timeoutMs / 1000} s: ${UNCERTAIN_ADVICE}`,
  )
}

/** Turns zod issues into field errors; `source` prefixes query and path fields. */
export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.map((i) => {
    const keys = i.code === 'unrecognized_keys' ? i.keys : []
    // jobs[3].command, as the SQL API names fields inside a batch.
    const field =
      [...i.path, ...keys.slice(0, 1)].reduce<string>(
        (at, seg) =>
          typeof seg === 'number' ? `${at}[${seg}]` : at ? `${at}.${String(seg)}` : String(seg),
        '',
      ) || '(body)'
    const message =
      i.code === 'unrecognized_keys'
        ? `unknown field${keys.length > 1 ? 's' : ''} ${keys.join(', ')}`
        : i.message
    return { field, message }
  })
}

/**
 * SQLSTATEs raised by a value the client sent, should one get past the request schemas: invalid
 * byte sequence (a NUL in text), datetime out of range, stack depth exceeded (deep JSON),
 * unsupported Unicode escape (\u0000 in jsonb).
 */
const DATA_ERRORS = new Set(['22021', '22008', '54001', '22P05'])

/** A Postgres error as postgres.js raises it. */
interface PgError {
  code?: string
  column_name?: string
  message: string
}

/** Maps any error to a problem response; unknown errors are logged, never shown. */
export function onError(logger: Logger): ErrorHandler {
  return (err, c) => {
    if (err instanceof PgschedError) {
      for (const [k, v] of Object.entries(err.headers)) c.header(k, v)
      return problem(c, err.code, err.message, err.errors)
    }
    if (err instanceof HTTPException) {
      if (err.status === 400) return problem(c, 'validation', 'the request body is not valid JSON')
      if (err.status === 415)
        return problem(c, 'unsupported_media_type', 'send the body as application/json')
      if (err.status === 401) return problem(c, 'unauthorized', err.message)
      if (err.status === 413) return problem(c, 'too_large', err.message)
      logger.error({ err, path: c.req.path }, 'api: unexpected HTTP exception')
      return problem(c, 'internal', 'an internal error occurred')
    }
    const pg = err as PgError
    // Values the request schemas should have refused but the database did: still the client's.
    if (pg.code !== undefined && DATA_ERRORS.has(pg.code)) {
      // A gap in the request schemas: worth knowing, but the client's error all the same.
      logger.warn({ code: pg.code, path: c.req.path }, 'api: the database refused a request value')
      const field = pg.column_name ?? '(body)'
      const message = `is not a value the database can store (${pg.message})`
      return problem(c, 'validation', `${field}: ${message}`, [{ field, message }])
    }
    if (pg.code === PG_ERROR.invalidParameter) {
      const field = pg.column_name ?? '(body)'
      const message = pg.message.replace(/^pgsched: [^:]+: /, '')
      return problem(c, 'validation', `${field}: ${message}`, [{ field, message }])
    }
    if (pg.code === PG_ERROR.noDataFound)
      return problem(c, 'not_found', pg.message.replace(/^pgsched: /, ''))
    if (pg.code === PG_ERROR.objectNotInState)
      return problem(c, 'conflict', pg.message.replace(/^pgsched: /, ''))
    if (pg.code === PG_ERROR.degraded) {
      noteRefusal(c, 'degradation')
      c.header('retry-after', String(DEGRADED_RETRY_AFTER_SECONDS))
      return problem(c, 'unavailable', pg.message.replace(/^pgsched: /, ''))
    }
    if (pg.code === PG_ERROR.rateLimited)
      return problem(c, 'rate_limited', pg.message.replace(/^pgsched: /, ''))
    if (isDatabaseUnreachable(err)) return databaseUnavailable(c, 5)
    logger.error({ err, path: c.req.path }, 'api: unhandled error')
    return problem(c, 'internal', 'an internal error occurred')
  }
}
