/**
 * Tokens of an identity provider: the verifier with PGSCHED_JWKS_URL against a real JWKS served
 * on loopback, and what it says when a token or the provider fails.
 */
import { generateKeyPair } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTokenVerifier, mintToken } from '../src/api/tokens.ts'
import { PgschedError } from '../src/core/errors.ts'
import { TEST_SECRET } from './helpers.ts'
import {
  type Claims,
  IDP_AUDIENCE,
  IDP_ISSUER,
  type IdentityProvider,
  startIdentityProvider,
} from './identity-provider.ts'
import { freePort } from './processes.ts'

describe('the token verifier with an identity provider (JWKS)', () => {
  let idp: IdentityProvider
  let otherKey: CryptoKey

  beforeAll(async () => {
    idp = await startIdentityProvider()
    otherKey = (await generateKeyPair('RS256')).privateKey
  })
  afterAll(() => idp?.close())

  const sign = (c?: Claims) => idp.sign(c)
  const verifier = (url = idp.jwksUrl) =>
    createTokenVerifier({ jwksUrl: url, issuer: IDP_ISSUER, audience: IDP_AUDIENCE })
  const refusal = async (p: Promise<unknown>) => {
    const e = await p.then(
      () => undefined,
      (err: unknown) => err,
    )
    expect(e).toBeInstanceOf(PgschedError)
    return e as PgschedError
  }

  it("accepts a token signed with one of the provider's keys, with its issuer and audience", async () => {
    expect(await verifier()(await sign({ roles: ['submitter', 'nonsense'] }))).toEqual({
      sub: 'carol',
      roles: ['submitter'],
    })
  })

  it('refuses a wrong audience, a wrong issuer, an unknown key and a forged signature', async () => {
    const verify = verifier()
    const cases: [Promise<string>, RegExp][] = [
      [sign({ aud: 'another-api' }), /audience/],
      [sign({ iss: 'https://evil.example' }), /issuer/],
      [sign({ kid: 'k2' }), /no single key/],
      [sign({ key: otherKey }), /signature: it does not verify/],
    ]
    for (const [token, message] of cases) {
      const e = await refusal(verify(await token))
      expect(e.code).toBe('unauthorized')
      expect(e.message).toMatch(message)
    }
  })

  it('refuses an HS256 token when only the provider is trusted, and one with alg none', async () => {
    const verify = verifier()
    const hs256 = await mintToken(TEST_SECRET, 'mallory', ['admin'], 3600)
    expect((await refusal(verify(hs256))).code).toBe('unauthorized')
    const [, payload] = (await sign({ roles: ['admin'] })).split('.')
    const none = `${btoa(JSON.stringify({ alg: 'none' })).replace(/=+$/, '')}.${payload}.`
    expect((await refusal(verify(none))).code).toBe('unauthorized')
  })

  it("answers unavailable (503, retry later) while the provider's keys cannot be read", async () => {
    const e = await refusal(verifier(`http://127.0.0.1:${await freePort()}/jwks`)(await sign()))
    expect(e.code).toBe('unavailable')
    expect(e.headers['retry-after']).toBe('5')
  })
})
