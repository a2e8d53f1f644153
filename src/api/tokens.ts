/** @module Tokens: minting HS256 JWTs and verifying tokens (HS256 secret and/or a JWKS). */
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from 'jose'

import { PgschedError } from '../core/errors.ts'
import { type Principal, ROLES, type Role } from '../core/types.ts'

/** Issuer and audience of tokens pgsched mints itself. */
const TOKEN_ISSUER = 'pgsched'
/** @see TOKEN_ISSUER */
const TOKEN_AUDIENCE = 'pgsched'

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
  /**
   * The clock tokens are checked against (exp, nbf, and how long a verified token is
   * remembered); tests pass one they can move.
   * @default Date.now
   */
  now?: () => number
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
  const clock = o.now ?? Date.now
  const key = o.secret ? new TextEncoder().encode(o.secret) : undefined
  const jwks = o.jwksUrl ? createRemoteJWKSet(new URL(o.jwksUrl)) : undefined
  const verify = async (
    token: string,
    now: number,
  ): Promise<{ principal: Principal; exp?: number }> => {
    const currentDate = new Date(now)
    let payload: JWTPayload
    // Which verification the token went to: it shapes what a refusal says.
    let via: Via = 'none'
    try {
      const header = decodeProtectedHeader(token)
      if (header.alg === 'HS256' && key) {
        via = 'secret'
        ;({ payload } = await jwtVerify(token, key, {
          algorithms: ['HS256'],
          issuer: TOKEN_ISSUER,
          audience: TOKEN_AUDIENCE,
          requiredClaims: ['exp'],
          currentDate,
        }))
      } else if (jwks) {
        via = 'jwks'
        ;({ payload } = await jwtVerify(token, jwks, {
          issuer: o.issuer,
          audience: o.audience,
          requiredClaims: ['exp'],
          currentDate,
        }))
      } else {
        throw new errors.JOSEAlgNotAllowed('unsupported algorithm')
      }
    } catch (e) {
      throw refusal(e, via)
    }
    if (typeof payload.sub !== 'string' || payload.sub.length === 0) {
      throw unauthorized('missing claim sub: the token names no user')
    }
    if (!('roles' in payload)) {
      throw unauthorized('missing claim roles: the token grants no role (admin, submitter, viewer)')
    }
    if (!Array.isArray(payload.roles)) {
      throw unauthorized('claim roles: must be a list of role names')
    }
    const roles = payload.roles.filter(isRole)
    return { principal: { sub: payload.sub, roles }, exp: payload.exp }
  }
  // A client sends the same token with every request: a verified token is remembered (keyed by
  // the whole token, signature included) until it expires, for at most VERIFIED_TTL_MS.
  const verified = new Map<string, { principal: Principal; until: number }>()
  return async (token) => {
    const now = clock()
    const hit = verified.get(token)
    if (hit && now < hit.until) return hit.principal
    if (hit) verified.delete(token)
    const { principal, exp } = await verify(token, now)
    if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!)
    const until = Math.min(now + VERIFIED_TTL_MS, exp === undefined ? Infinity : exp * 1000)
    verified.set(token, { principal, until })
    return principal
  }
}

/** Which key a token was checked with: the HS256 secret, the JWKS, or neither (refused before). */
type Via = 'secret' | 'jwks' | 'none'

function unauthorized(reason: string, cause?: unknown): PgschedError {
  return new PgschedError('unauthorized', `the bearer token was refused: ${reason}`, {
    cause,
    errors: [{ field: 'authorization', message: reason }],
  })
}

/**
 * The refusal for a token that failed a check: it names the check (and the claim), never a key
 * or a value from the token beyond the claim's name.
 */
function refusal(e: unknown, via: Via): PgschedError {
  if (e instanceof errors.JWTExpired) return unauthorized('expired: its exp is past', e)
  if (e instanceof errors.JWTClaimValidationFailed) {
    const claim = e.claim
    const expected =
      via === 'secret' && (claim === 'iss' || claim === 'aud')
        ? ` (HS256 tokens carry ${claim} "${TOKEN_ISSUER}"; mint them with pgsched token)`
        : ''
    if (e.reason === 'missing') {
      const why = claim === 'exp' ? ': a token must expire' : expected
      return unauthorized(`missing claim ${claim}${why}`, e)
    }
    const check =
      claim === 'iss'
        ? 'issuer'
        : claim === 'aud'
          ? 'audience'
          : claim === 'nbf'
            ? 'not before'
            : `claim ${claim}`
    return unauthorized(
      `${check}: the ${claim} claim is not what this server accepts${expected}`,
      e,
    )
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) {
    return unauthorized('signature: it does not verify with any key this server trusts', e)
  }
  if (e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) {
    return unauthorized(
      'algorithm: not accepted (HS256 with PGSCHED_JWT_SECRET, or those of PGSCHED_JWKS_URL)',
      e,
    )
  }
  if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys) {
    return unauthorized('signature: no single key of the identity provider matches it', e)
  }
  // The identity provider's keys could not be fetched (a network error is no JOSEError).
  if (
    e instanceof errors.JWKSTimeout ||
    e instanceof errors.JWKSInvalid ||
    (via === 'jwks' && !(e instanceof errors.JOSEError))
  ) {
    return new PgschedError('unavailable', "the identity provider's keys cannot be read now", {
      cause: e,
      headers: { 'retry-after': '5' },
    })
  }
  return unauthorized('malformed: not a signed JWT (header.payload.signature)', e)
}

/** How long a verified token is trusted without checking its signature again. */
const VERIFIED_TTL_MS = 60_000
/** Most verified tokens remembered; the oldest is forgotten first. */
const VERIFIED_MAX = 10_000

function isRole(r: unknown): r is Role {
  return (ROLES as readonly unknown[]).includes(r)
}
