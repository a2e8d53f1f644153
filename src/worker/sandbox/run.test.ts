import { existsSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { SandboxMode } from '../../core/types.ts'
import { OUTPUT_TAIL_BYTES } from './process.ts'
import {
  attemptFolders,
  marker,
  mentioning,
  type SandboxBundle,
  setupSandbox,
  sleepers,
} from './test-support.ts'

// The behaviour runCommand always had, in every mode: the sandbox changes where and as whom a
// command runs, not how its end is reported.
describe.each(['bwrap', 'rlimits', 'none'] as const satisfies SandboxMode[])('%s mode', (mode) => {
  let b: SandboxBundle
  const run = (
    command: string,
    more: Partial<Parameters<SandboxBundle['sandbox']['run']>[0]> = {},
  ) => b.sandbox.run({ command, timeoutMs: 5_000, limits: {}, network: false, ...more })

  beforeAll(async () => {
    b = await setupSandbox(mode)
    expect(b.sandbox.describe()).toBe(mode)
  })
  afterAll(() => b.close())

  it('reports success with combined stdout and stderr', async () => {
    const res = await run('echo hello; echo oops >&2')
    expect(res).toMatchObject({ exitCode: 0, signal: null, outcome: 'succeeded', error: null })
    expect(res.output).toContain('hello\n')
    expect(res.output).toContain('oops\n')
  })

  it('reports a non-zero exit code as failed', async () => {
    const res = await run('echo partial; exit 3')
    expect(res).toMatchObject({
      exitCode: 3,
      signal: null,
      outcome: 'failed',
      error: 'exited with code 3',
    })
    expect(res.output).toBe('partial\n')
  })

  it('reports a self-inflicted signal as failed', async () => {
    const res = await run('kill -KILL $$')
    expect(res).toMatchObject({
      exitCode: null,
      signal: 'SIGKILL',
      outcome: 'failed',
      error: 'killed by SIGKILL',
    })
  })

  it('keeps only the last 64 KiB of output', async () => {
    const res = await run("head -c 200000 /dev/zero | tr '\\0' a; echo END")
    expect(res.outcome).toBe('succeeded')
    expect(res.output.length).toBe(OUTPUT_TAIL_BYTES)
    expect(res.output.endsWith('aEND\n')).toBe(true)
  })

  it('times out and stops the command with SIGTERM', async () => {
    const started = Date.now()
    const res = await run('sleep 30', { timeoutMs: 200, killGraceMs: 2_000 })
    expect(res).toMatchObject({
      exitCode: null,
      signal: 'SIGTERM',
      outcome: 'timed_out',
      error: 'timed out after 200 ms',
    })
    expect(Date.now() - started).toBeLessThan(1_500)
  })

  it('SIGKILLs a command that ignores SIGTERM once the grace period is over', async () => {
    const started = Date.now()
    const res = await run("trap '' TERM; sleep 30", { timeoutMs: 500, killGraceMs: 300 })
    expect(res).toMatchObject({ exitCode: null, signal: 'SIGKILL', outcome: 'timed_out' })
    expect(Date.now() - started).toBeGreaterThanOrEqual(750)
    expect(Date.now() - started).toBeLessThan(3_000)
  })

  it('cancels on abort and kills grandchildren too', async () => {
    const ac = new AbortController()
    const m = marker()
    const running = run(`sleep ${m} & wait`, {
      timeoutMs: 10_000,
      killGraceMs: 1_000,
      signal: ac.signal,
    })
    await expect.poll(() => sleepers(m).length, { timeout: 5_000 }).toBe(1)
    ac.abort()
    const res = await running
    expect(res).toMatchObject({ outcome: 'cancelled', error: 'cancelled', exitCode: null })
    await expect.poll(() => mentioning(m), { timeout: 1_000 }).toEqual([])
  })

  it('does not start the command when already aborted', async () => {
    const m = marker()
    const res = await run(`sleep ${m}`, { signal: AbortSignal.abort() })
    expect(res).toMatchObject({
      outcome: 'cancelled',
      error: 'cancelled',
      exitCode: null,
      signal: null,
    })
    expect(attemptFolders(b.scratchRoot)).toEqual([])
  })

  it('does not wait for background processes left behind by a finished command', async () => {
    const started = Date.now()
    const res = await run('sleep 30 & echo done', { timeoutMs: 10_000, killGraceMs: 1_000 })
    expect(res).toMatchObject({ exitCode: 0, outcome: 'succeeded', output: 'done\n' })
    expect(Date.now() - started).toBeLessThan(1_500)
  })

  it('passes opts.env and keeps the worker environment out', async () => {
    const previous = process.env.PGSCHED_JWT_SECRET
    process.env.PGSCHED_JWT_SECRET = 'super-secret'
    try {
      const res = await run('env', { env: { PGSCHED_JOB_ID: '42' } })
      expect(res.outcome).toBe('succeeded')
      expect(res.output).not.toContain('super-secret')
      expect(res.output).toContain('PGSCHED_JOB_ID=42\n')
      expect(res.output).toMatch(/^PATH=/m)
    } finally {
      if (previous === undefined) delete process.env.PGSCHED_JWT_SECRET
      else process.env.PGSCHED_JWT_SECRET = previous
    }
  })

  it('runs in a private scratch folder that is HOME and is removed afterwards', async () => {
    const res = await run('test "$HOME" = "$(pwd)" && stat -c %a . && echo x > file && cat file')
    expect(res).toMatchObject({ outcome: 'succeeded', output: '700\nx\n' })
    expect(res.output).not.toContain(process.cwd())
    expect(attemptFolders(b.scratchRoot)).toEqual([])
  })

  it('refuses a limit that is not a positive integer', async () => {
    const res = await run('true', { limits: { memory_mb: 0 } })
    expect(res).toMatchObject({ outcome: 'failed' })
    expect(res.error).toContain('memory_mb')
  })
})

describe('an unavailable sandbox', () => {
  it('says why and fails every attempt with the reason instead of falling back', async () => {
    const b = await setupSandbox('bwrap', { jobUser: 'pgsched-no-such-user' })
    try {
      expect(b.sandbox.available).toBe(false)
      expect(b.sandbox.describe()).toMatch(
        /^unavailable: PGSCHED_JOB_USER=pgsched-no-such-user: no such user/,
      )
      const res = await b.sandbox.run({
        command: 'touch /tmp/ran',
        timeoutMs: 5_000,
        limits: {},
        network: false,
      })
      expect(res).toMatchObject({ outcome: 'failed', exitCode: null })
      expect(res.error).toContain('no such user')
      expect(existsSync('/tmp/ran')).toBe(false)
    } finally {
      await b.close()
    }
  })

  it('never runs jobs as root', async () => {
    const b = await setupSandbox('rlimits', { jobUser: 'root' })
    try {
      expect(b.sandbox.describe()).toMatch(/^unavailable: .*uid or gid 0/)
    } finally {
      await b.close()
    }
  })
})

describe('none mode', () => {
  it('warns at every start that it is for trusted development only', async () => {
    const b = await setupSandbox('none')
    try {
      expect(
        b.logs.some(
          (l) => l.level === 'warn' && l.text.includes('trusted single-user development only'),
        ),
      ).toBe(true)
    } finally {
      await b.close()
    }
  })
})
