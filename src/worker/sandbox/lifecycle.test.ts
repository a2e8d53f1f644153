import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { attemptFolders, marker, mentioning, setupSandbox, sleepers } from './test-support.ts'

const FIXTURE = new URL('./fixture-worker.ts', import.meta.url).pathname

// The job cgroups of an instance, for the v1 hierarchies this machine (and CI) has.
function cgroupFolders(instance: string): string[] {
  return readFileSync('/proc/self/cgroup', 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(':'))
    .filter(([, controller]) => controller === 'memory' || controller === 'pids')
    .map(([, controller, path]) =>
      join('/sys/fs/cgroup', controller ?? '', path ?? '', 'pgsched', instance),
    )
}

describe.each(['bwrap', 'rlimits'] as const)('%s mode: a worker SIGKILLed mid-command', (mode) => {
  it('leaves no process behind, and no folder once the next worker has started', async () => {
    const scratchRoot = mkdtempSync(join(tmpdir(), 'pgsched-sandbox-test-'))
    const [escaped, plain] = [marker(), marker()]
    const worker = spawn(
      process.execPath,
      [FIXTURE, mode, scratchRoot, `(setsid sleep ${escaped} &); sleep ${plain}`],
      {
        stdio: 'ignore',
      },
    )
    try {
      await expect
        .poll(() => sleepers(escaped).length + sleepers(plain).length, { timeout: 10_000 })
        .toBe(2)
      const [instance] = readdirSync(scratchRoot)
      expect(instance).toMatch(/^w\d+-/)
      const cgroups = cgroupFolders(instance as string)
      expect(cgroups.length).toBeGreaterThan(0)
      for (const dir of cgroups) expect(existsSync(dir)).toBe(true)

      worker.kill('SIGKILL')
      await new Promise((resolve) => worker.on('close', resolve))
      // The worker's watchdog empties the job's cgroups when the worker dies; in bwrap mode the
      // kernel usually has already (PDEATHSIG to bwrap, then the PID namespace). rlimits has no
      // namespace: without the watchdog its job lived on until the next worker started.
      await expect
        .poll(() => [...mentioning(escaped), ...mentioning(plain)], { timeout: 2_000 })
        .toEqual([])
      expect(existsSync(join(scratchRoot, instance as string))).toBe(true)

      // The next worker on the host removes what the dead one left.
      const next = await setupSandbox(mode, { scratchRoot })
      try {
        expect(next.sandbox.describe()).toBe(mode)
        expect([...mentioning(escaped), ...mentioning(plain)]).toEqual([])
        expect(existsSync(join(scratchRoot, instance as string))).toBe(false)
        for (const dir of cgroups) expect(existsSync(dir)).toBe(false)
      } finally {
        await next.sandbox.stop()
      }
    } finally {
      worker.kill('SIGKILL')
      rmSync(scratchRoot, { recursive: true, force: true })
    }
  })
})

describe('stop()', () => {
  it('cancels running attempts and removes the sandbox’s folders', async () => {
    const b = await setupSandbox('bwrap')
    const m = marker()
    const running = b.sandbox.run({
      command: `sleep ${m}`,
      timeoutMs: 30_000,
      limits: {},
      network: false,
    })
    await expect.poll(() => sleepers(m).length, { timeout: 5_000 }).toBe(1)
    expect(attemptFolders(b.scratchRoot)).toHaveLength(1)
    await b.sandbox.stop()
    expect(await running).toMatchObject({ outcome: 'cancelled' })
    expect(mentioning(m)).toEqual([])
    expect(readdirSync(b.scratchRoot)).toEqual([])
    const after = await b.sandbox.run({
      command: 'true',
      timeoutMs: 5_000,
      limits: {},
      network: false,
    })
    expect(after).toMatchObject({ outcome: 'failed' })
    await b.close()
  })
})

// Runs the stand-in worker in a private mount namespace where /usr/bin/bwrap is `replacement`.
async function workerWithBwrap(replacement: string): Promise<{ ready: string; error: string }> {
  const scratchRoot = mkdtempSync(join(tmpdir(), 'pgsched-sandbox-test-'))
  try {
    const script = `mount --bind "$1" /usr/bin/bwrap && exec "$2" "$3" bwrap "$4" 'echo ran'`
    const child = spawn(
      'unshare',
      ['-m', 'sh', '-c', script, 'sh', replacement, process.execPath, FIXTURE, scratchRoot],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let out = ''
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
    })
    await new Promise((resolve) => child.on('close', resolve))
    const [ready, result] = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(result).toMatchObject({ outcome: 'failed', output: '' })
    return { ready: ready.ready, error: result.error }
  } finally {
    rmSync(scratchRoot, { recursive: true, force: true })
  }
}

describe('bwrap mode on a machine where it cannot work', () => {
  it('says that bwrap is missing and fails jobs instead of running them unsandboxed', async () => {
    // Bound over bwrap, /dev/null is not executable: as good as absent.
    const { ready, error } = await workerWithBwrap('/dev/null')
    expect(ready).toBe(
      'unavailable: bwrap not found; install the Debian package bubblewrap or set PGSCHED_SANDBOX=rlimits',
    )
    expect(error).toContain('bwrap not found')
  })

  it('says why the probe sandbox failed when user namespaces are refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgsched-fake-bwrap-'))
    try {
      const fake = join(dir, 'bwrap')
      writeFileSync(
        fake,
        '#!/bin/sh\necho "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n',
        {
          mode: 0o755,
        },
      )
      const { ready, error } = await workerWithBwrap(fake)
      expect(ready).toMatch(
        /^unavailable: bwrap cannot start a job here \(the sandbox failed to start: bwrap: setting up uid map: Permission denied\); unprivileged user namespaces look disabled/,
      )
      expect(error).toContain('setting up uid map')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
