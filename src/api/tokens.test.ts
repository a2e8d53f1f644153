import { describe, expect, it } from 'vitest'

import { createTokenVerifier, mintToken } from './tokens.ts'

const SECRET = 'tokens-test-secret-that-is-long-enough'

describe('the token verifier', () => {
  it('remembers a verified token only until it expires', async () => {
    let now = Date.now()
    const verify = createTokenVerifier({ secret: SECRET, now: () => now })
    const token = await mintToken(SECRET, 'alice', ['submitter'], 1)
    expect(await verify(token)).toEqual({ sub: 'alice', roles: ['submitter'] })
    expect(await verify(token)).toEqual({ sub: 'alice', roles: ['submitter'] })
    // exp has a resolution of a second: past it (and jose's clock tolerance of none), refused.
    now += 2100
    await expect(verify(token)).rejects.toThrow(/expired/)
  })

  it('does not let a remembered token vouch for a tampered copy of it', async () => {
    const verify = createTokenVerifier({ secret: SECRET })
    const token = await mintToken(SECRET, 'alice', ['admin'], 3600)
    await verify(token)
    const [header, payload, signature] = token.split('.')
    const forged = `${header}.${payload}.${signature!.slice(0, -2)}${signature!.endsWith('AA') ? 'BB' : 'AA'}`
    await expect(verify(forged)).rejects.toThrow(/signature/)
  })
})
