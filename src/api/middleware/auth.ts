/** @module Authentication (bearer JWT) and authorization (roles, ownership) for /v1 routes. */
import type { MiddlewareHandler } from 'hono'

import { PgschedError } from '../../core/errors.ts'
import type { Principal, Role } from '../../core/types.ts'
import type { SqlPool } from '../../db/client.ts'
import type { TokenVerifier } from '../tokens.ts'

/**
 * Hono environment of the API: the request's database pool (middleware/database.ts) and the
 * authenticated principal travel in the context.
 */
export type AppEnv = { Variables: { sql: SqlPool; principal: Principal } }

/** Rejects requests without a valid bearer token (401) and stores the principal. */
export function authenticate(verify: TokenVerifier): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const header = c.req.header('authorization')
    const match = header?.match(/^Bearer\s+(\S+)$/i)
    if (!match) throw new PgschedError('unauthorized', 'send Authorization: Bearer <token>')
    c.set('principal', await verify(match[1]!))
    await next()
  }
}

/** What a principal does: read its jobs and runs, change them, or operate the system. */
type Action = 'read' | 'write' | 'operate'

const ALLOWED: Record<Action, readonly Role[]> = {
  read: ['admin', 'submitter', 'viewer'],
  write: ['admin', 'submitter'],
  operate: ['admin'],
}

/** Throws 403 unless one of the principal's roles allows `action`. */
function requireRole(p: Principal, action: Action): void {
  if (!p.roles.some((r) => ALLOWED[action].includes(r))) {
    throw new PgschedError(
      'forbidden',
      action === 'operate'
        ? `only an admin may do this; your roles: ${p.roles.join(', ') || 'none'}`
        : `your roles (${p.roles.join(', ') || 'none'}) may not ${action} jobs`,
    )
  }
}

/**
 * Route middleware: 403 unless the principal may do `action`. It runs before the route's request
 * validation, so a caller without the role learns nothing about what a valid body would be.
 */
export function allow(action: Action): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    requireRole(c.get('principal'), action)
    await next()
  }
}

/** The owner a principal's listings are limited to; undefined (everyone's) for an admin. */
export function ownerScope(p: Principal): string | undefined {
  return p.roles.includes('admin') ? undefined : p.sub
}

/**
 * Throws 404 unless the principal may see a resource owned by `owner` (or it is absent): others'
 * jobs are reported as missing, so their existence does not leak.
 */
export function requireVisible<T extends { owner: string }>(
  p: Principal,
  what: string,
  id: number,
  r: T | undefined,
): T {
  if (r === undefined || (ownerScope(p) !== undefined && r.owner !== p.sub)) {
    throw new PgschedError('not_found', `${what} ${id} does not exist`)
  }
  return r
}
