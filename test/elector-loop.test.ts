/**
 * The elector never dies silently: a failure outside its leadership check (its pass callback,
 * its wait) is logged, and the loop goes on or stops loudly. A database error with no code
 * (workerd's socket errors) still counts as the database being unreachable, so the API answers
 * 503, not 500.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import type { Logger } from '../src/core/types.ts'
import { isDatabaseUnreachable } from '../src/db/client.ts'
import { Elector } from '../src/scheduler/elector.ts'
import { setup, type TestBundle, waitFor } from './helpers.ts'

let t: TestBundle
beforeAll(async () => {
  t = await setup()
})
afterAll(async () => {
  await t.close()
})

function recordingLogger(lines: string[]): Logger {
  const log = (level: string) => (obj: object | string, msg?: string) =>
    lines.push(`${level} ${typeof obj === 'string' ? obj : msg}`)
  return { debug: () => {}, info: log('info'), warn: log('warn'), error: log('error') }
}

it('goes on campaigning, and says so, when its pass callback throws', async () => {
  const lines: string[] = []
  let passes = 0
  const e = new Elector({
    url: t.url,
    holder: 'loop-test',
    pollMs: 100,
    logger: recordingLogger(lines),
    onElected: async () => {},
    onDemoted: async () => {},
    onPass: () => {
      passes++
      if (passes === 1) throw new Error('a broken observer')
    },
  })
  e.start()
  try {
    await waitFor(
      async () => passes >= 3,
      5_000,
      () => `passes: ${passes}; log: ${lines}`,
    )
    expect(e.isLeader).toBe(true)
    expect(lines).toContain('error scheduler: the elector pass callback failed')
  } finally {
    await e.stop()
  }
})

it("counts workerd's and Deno's code-less socket errors as the database unreachable", () => {
  const unreachable = [
    new Error('proxy request failed, cannot connect to the specified address'),
    new Error('Network connection lost.'),
    Object.assign(new Error('Connection refused (os error 111)'), { name: 'ConnectionRefused' }),
    Object.assign(new Error('x'), { code: 'ECONNREFUSED' }),
    Object.assign(new Error('the database system is shutting down'), { code: '57P03' }),
  ]
  for (const err of unreachable) expect(isDatabaseUnreachable(err), String(err)).toBe(true)
  const reachable = [
    // A statement's error has a SQLSTATE, whatever its words say.
    Object.assign(new Error('connection refused by policy'), { code: '23505' }),
    new TypeError('sql is not a function'),
    new Error('invalid input syntax for type json'),
    null,
    'a string',
  ]
  for (const err of reachable) expect(isDatabaseUnreachable(err), String(err)).toBe(false)
})
