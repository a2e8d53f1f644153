import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { watch } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { OUTPUT_TAIL_BYTES, runCommand } from './sandbox.ts'

let dir: string

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgsched-sandbox-'))
})

afterEach(() => {
  rmSync(dir, { recursive: true, force: true })
})

// PID 1 in a container may never reap orphans, so a killed process can linger as a zombie.
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

// Event-driven so the test waits exactly as long as the command needs, no polling.
async function waitForFile(directory: string, name: string): Promise<string> {
  const ac = new AbortController()
  const watcher = watch(directory, { signal: ac.signal })
  try {
    if (existsSync(join(directory, name))) return readFileSync(join(directory, name), 'utf8')
    for await (const event of watcher) {
      if (event.filename === name) return readFileSync(join(directory, name), 'utf8')
    }
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err
  } finally {
    ac.abort()
  }
  throw new Error(`${name} never appeared`)
}

describe('runCommand', () => {
  it('reports success with combined stdout and stderr', async () => {
    const res = await runCommand({ command: 'echo hello; echo oops >&2', timeoutMs: 5_000 })
    expect(res).toMatchObject({ exitCode: 0, signal: null, outcome: 'succeeded', error: null })
    expect(res.output).toContain('hello\n')
    expect(res.output).toContain('oops\n')
  })

  it('reports a non-zero exit code as failed', async () => {
    const res = await runCommand({ command: 'echo partial; exit 3', timeoutMs: 5_000 })
    expect(res).toMatchObject({
      exitCode: 3,
      signal: null,
      outcome: 'failed',
      error: 'exited with code 3',
    })
    expect(res.output).toBe('partial\n')
  })

  it('reports a self-inflicted signal as failed', async () => {
    const res = await runCommand({ command: 'kill -KILL $$', timeoutMs: 5_000 })
    expect(res).toMatchObject({
      exitCode: null,
      signal: 'SIGKILL',
      outcome: 'failed',
      error: 'killed by SIGKILL',
    })
  })

  it('keeps only the last 64 KiB of output', async () => {
    const res = await runCommand({
      command: "head -c 200000 /dev/zero | tr '\\0' a; echo END",
      timeoutMs: 5_000,
    })
    expect(res.outcome).toBe('succeeded')
    expect(res.output.length).toBeLessThanOrEqual(OUTPUT_TAIL_BYTES)
    expect(res.output.length).toBe(OUTPUT_TAIL_BYTES)
    expect(res.output.endsWith('aEND\n')).toBe(true)
  })

  it('times out and stops the command with SIGTERM', async () => {
    const started = Date.now()
    const res = await runCommand({ command: 'sleep 30', timeoutMs: 200, killGraceMs: 2_000 })
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
    // The long timeout lets the shell install its trap before SIGTERM arrives.
    const res = await runCommand({
      command: "trap '' TERM; sleep 30",
      timeoutMs: 500,
      killGraceMs: 300,
    })
    const elapsed = Date.now() - started
    expect(res).toMatchObject({ exitCode: null, signal: 'SIGKILL', outcome: 'timed_out' })
    expect(elapsed).toBeGreaterThanOrEqual(750)
    expect(elapsed).toBeLessThan(3_000)
  })

  it('cancels on abort and kills grandchildren too', async () => {
    const ac = new AbortController()
    // Rename makes the pid file appear atomically, so its content is complete when we see it.
    const running = runCommand({
      command: 'sleep 30 & echo $! > pid.tmp && mv pid.tmp pid; wait',
      timeoutMs: 10_000,
      killGraceMs: 1_000,
      cwd: dir,
      signal: ac.signal,
    })
    const pid = Number((await waitForFile(dir, 'pid')).trim())
    expect(isAlive(pid)).toBe(true)
    ac.abort()
    const res = await running
    expect(res).toMatchObject({ outcome: 'cancelled', error: 'cancelled', exitCode: null })
    // The group's SIGTERM reaches the grandchild at once, but on a loaded machine it may not have
    // died yet when the shell's exit is reported.
    await expect.poll(() => isAlive(pid), { timeout: 1_000 }).toBe(false)
  })

  it('does not start the command when already aborted', async () => {
    const res = await runCommand({
      command: 'touch started',
      timeoutMs: 5_000,
      cwd: dir,
      signal: AbortSignal.abort(),
    })
    expect(res).toMatchObject({
      outcome: 'cancelled',
      error: 'cancelled',
      exitCode: null,
      signal: null,
    })
    expect(existsSync(join(dir, 'started'))).toBe(false)
  })

  it('does not wait for background processes left behind by a finished command', async () => {
    const started = Date.now()
    const res = await runCommand({
      command: 'sleep 30 & echo done',
      timeoutMs: 10_000,
      killGraceMs: 1_000,
    })
    expect(res).toMatchObject({ exitCode: 0, outcome: 'succeeded', output: 'done\n' })
    expect(Date.now() - started).toBeLessThan(1_500)
  })

  it('reports a spawn failure as failed instead of throwing', async () => {
    const res = await runCommand({ command: 'true', timeoutMs: 5_000, cwd: join(dir, 'missing') })
    expect(res.outcome).toBe('failed')
    expect(res.error).toContain('does not exist')
  })

  it('does not leak the parent environment but passes opts.env', async () => {
    const previous = process.env.PGSCHED_JWT_SECRET
    process.env.PGSCHED_JWT_SECRET = 'super-secret'
    try {
      const res = await runCommand({
        command: 'env',
        timeoutMs: 5_000,
        env: { PGSCHED_JOB_ID: '42' },
      })
      expect(res.outcome).toBe('succeeded')
      expect(res.output).not.toContain('PGSCHED_JWT_SECRET')
      expect(res.output).not.toContain('super-secret')
      expect(res.output).toContain('PGSCHED_JOB_ID=42\n')
      if (process.env.PATH !== undefined) expect(res.output).toContain(`PATH=${process.env.PATH}\n`)
    } finally {
      if (previous === undefined) delete process.env.PGSCHED_JWT_SECRET
      else process.env.PGSCHED_JWT_SECRET = previous
    }
  })
})
