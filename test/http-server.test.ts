/**
 * The API as a real Node server: what Node's own HTTP parser refuses before the app sees a request
 * is answered as problem+json too.
 */
import { connect } from 'node:net'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { setup, TEST_SECRET, type TestBundle } from './helpers.ts'
import { freePort, type Service, startPgsched } from './processes.ts'

let t: TestBundle
let api: Service
let port: number

beforeAll(async () => {
  t = await setup()
  port = await freePort()
  api = await startPgsched('api', {
    DATABASE_URL: t.url,
    PGSCHED_JWT_SECRET: TEST_SECRET,
    PORT: String(port),
  })
})
afterAll(async () => {
  await api?.stop()
  await t?.close()
})

/** Sends raw bytes and returns everything the server answered before closing. */
function raw(request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(request))
    let answer = ''
    socket.on('data', (d) => {
      answer += d.toString('utf8')
    })
    socket.on('close', () => resolve(answer))
    socket.on('error', reject)
  })
}

it('answers headers over 16 KiB with a problem+json 431', async () => {
  const answer = await raw(
    `GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(100_000)}\r\n\r\n`,
  )
  const [head, body] = answer.split('\r\n\r\n')
  expect(head).toMatch(/^HTTP\/1\.1 431 /)
  expect(head).toContain('content-type: application/problem+json')
  expect(JSON.parse(body!)).toMatchObject({ status: 431, title: 'Request header fields too large' })
})

it('answers a request that is not HTTP with a problem+json 400', async () => {
  const answer = await raw('HELLO\r\n\r\n')
  expect(answer).toMatch(/^HTTP\/1\.1 400 /)
  expect(JSON.parse(answer.split('\r\n\r\n')[1]!)).toMatchObject({ status: 400 })
})
