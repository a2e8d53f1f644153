import { afterEach, expect, it, vi } from 'vitest'

import { createConsoleLogger } from './wiring.ts'

afterEach(() => vi.restoreAllMocks())

it('writes one JSON line a record, an error with its message and cause', () => {
  const lines: string[] = []
  vi.spyOn(console, 'log').mockImplementation((line: string) => void lines.push(line))
  const logger = createConsoleLogger()
  logger.info('up')
  logger.error(
    { err: new Error('elector lost', { cause: new Error('socket closed') }) },
    'scheduler: pass failed',
  )
  logger.debug('not written')
  const [up, failed] = lines.map((l) => JSON.parse(l))
  expect(lines).toHaveLength(2)
  expect(up).toMatchObject({ level: 'info', msg: 'up' })
  expect(failed).toMatchObject({
    level: 'error',
    msg: 'scheduler: pass failed',
    err: { name: 'Error', message: 'elector lost', cause: { message: 'socket closed' } },
  })
})
