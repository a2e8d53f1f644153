/** A stand-in identity provider for tests: an RS256 key pair, its JWKS served on loopback. */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

import { exportJWK, generateKeyPair, SignJWT } from 'jose'

export const IDP_ISSUER = 'https://idp.example'
export const IDP_AUDIENCE = 'pgsched'

/** What a test sets in a token; anything unset is the provider's own. */
export interface Claims {
  key?: CryptoKey
  kid?: string
  iss?: string
  aud?: string
  sub?: string
  roles?: unknown
}

export interface IdentityProvider {
  /** URL of its JWKS (one RS256 key, kid k1). */
  jwksUrl: string
  /** Key fetches served so far. */
  fetches(): number
  /** A token valid for an hour, signed with its key unless `key` says otherwise. */
  sign(claims?: Claims): Promise<string>
  close(): Promise<void>
}

/** Starts one; each key fetch is answered after `delayMs`. */
export async function startIdentityProvider(delayMs = 0): Promise<IdentityProvider> {
  const { publicKey, privateKey } = await generateKeyPair('RS256')
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }
  let fetches = 0
  const server = createServer((_, res) => {
    fetches++
    setTimeout(
      () =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ keys: [jwk] })),
      delayMs,
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    jwksUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
    fetches: () => fetches,
    sign: (c = {}) =>
      new SignJWT({ roles: c.roles ?? ['viewer'] })
        .setProtectedHeader({ alg: 'RS256', kid: c.kid ?? 'k1' })
        .setSubject(c.sub ?? 'carol')
        .setIssuer(c.iss ?? IDP_ISSUER)
        .setAudience(c.aud ?? IDP_AUDIENCE)
        .setExpirationTime('1h')
        .sign(c.key ?? privateKey),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}
