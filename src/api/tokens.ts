/** @module Tokens: minting HS256 JWTs and verifying tokens (HS256 secret and/or a JWKS). */
import { createRemoteJWKSet, type JWTPayload, jwtVerify, SignJWT } from 'jose'

import { PgschedError } from '../core/errors.ts'
import { type Principal, ROLES, type Role } from '../core/types.ts'

/** Issuer and audience of tokens pgsched mints itself. */
export const TOKEN_ISSUER = 'pgsched'
/** @see TOKEN_ISSUER */
export const TOKEN_AUDIENCE = 'pgsched'

/** Mints an HS256 token for `sub` with `roles`, valid for `ttlSeconds`. */
export async function mintToken(
  secret: string,
  sub: string,
  roles: readonly Role[],
  ttlSeconds: number,
): Promise<string> {
  return new SignJWT({ roles: [...roles] })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuer(TOKEN_ISSUER)
    .setAudience(TOKEN_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .sign(new TextEncoder().encode(secret))
}

/** Settings of the token verifier. */
export interface TokenVerifierOptions {
  /** HS256 secret; tokens minted by `pgsched token`. */
  secret?: string
  /** JWKS URL of an identity provider. */
  jwksUrl?: string
  /** Expected issuer of JWKS tokens. */
  issuer?: string
  /** Expected audience of JWKS tokens. */
  audience?: string
}

/** Turns a bearer token into a Principal or throws PgschedError('unauthorized'). */
export type TokenVerifier = (token: string) => Promise<Principal>

/** Builds a verifier. Refuses to build one that would accept nothing. */
export function createTokenVerifier(o: TokenVerifierOptions): TokenVerifier {
  if (!o.secret && !o.jwksUrl) {
    throw new PgschedError(
      'config',
      'set PGSCHED_JWT_SECRET or PGSCHED_JWKS_URL: the API never runs without auth',
    )
  }
  const key = o.secret ? new TextEncoder().encode(o.secret) : undefined
  const jwks = o.jwksUrl ? createRemoteJWKSet(new URL(o.jwksUrl)) : undefined
  const verify = async (token: string): Promise<{ principal: Principal; exp?: number }> => {
    let payload: JWTPayload
    try {
      const alg = JSON.parse(atob(token.split('.')[0]!.replace(/-/g, '+').replace(/_/g, '/'))).alg
      if (alg === 'HS256' && key) {
        ;({ payload } = await jwtVerify(token, key, {
          algorithms: ['HS256'],
          issuer: TOKEN_ISSUER,
          audience: TOKEN_AUDIENCE,
        }))
      } else if (jwks) {
        ;({ payload } = await jwtVerify(token, jwks, { issuer: o.issuer, audience: o.audience }))
      } else {
        throw new Error(`unsupported token algorithm ${alg}`)
      }
    } catch (e) {
      throw new PgschedError('unauthorized', 'the bearer token is invalid or expired', { cause: e })
    }
    const roles = Array.isArray(payload.roles) ? payload.roles.filter(isRole) : []
    if (typeof payload.sub !== 'string' || payload.sub.length === 0) {
      throw new PgschedError('unauthorized', 'the bearer token has no sub claim')
    }
    return { principal: { sub: payload.sub, roles }, exp: payload.exp }
  }
  // A client sends the same token with every request: a verified token is remembered (keyed by
  // the whole token, signature included) until it expires, for at most VERIFIED_TTL_MS.
  const verified = new Map<string, { principal: Principal; until: number }>()
  return async (token) => {
    const now = Date.now()
    const hit = verified.get(token)
    if (hit && now < hit.until) return hit.principal
    if (hit) verified.delete(token)
    const { principal, exp } = await verify(token)
    if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!)
    const until = Math.min(now + VERIFIED_TTL_MS, exp === undefined ? Infinity : exp * 1000)
    verified.set(token, { principal, until })
    return principal
  }
}

/** How long a verified token is trusted without checking its signature again. */
const VERIFIED_TTL_MS = 60_000
/** Most verified tokens remembered; the oldest is forgotten first. */
const VERIFIED_MAX = 10_000

function isRole(r: unknown): r is Role {
  return (ROLES as readonly unknown[]).includes(r)
}
