import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { JOB_LIMITS_DEFAULT } from '../../core/config.ts'
import type { JobLimits } from '../../core/types.ts'
import { type SandboxBundle, setupSandbox, workerRun } from './test-support.ts'
import { sandboxVerdict } from './verdict.ts'

// Without limits each of these commands would run to the end (or eat the machine) and succeed.

describe.each(['bwrap', 'rlimits'] as const)('%s mode: a job past its limit', (mode) => {
  let b: SandboxBundle
  const run = (command: string, limits: JobLimits) =>
    b.sandbox.run({ command, timeoutMs: 20_000, limits, network: false })

  beforeAll(async () => {
    b = await setupSandbox(mode)
  })
  afterAll(() => b.close())

  it('is stopped at its memory limit', async () => {
    // tail keeps a line in memory, and /dev/zero has no newline.
    const res = await run('head -c 200m /dev/zero | tail', { memory_mb: 32 })
    expect(res).toMatchObject({ outcome: 'failed', error: 'memory limit of 32 MiB exceeded' })
  })

  it('is stopped at its CPU time limit', async () => {
    const res = await run('while :; do :; done', { cpu_seconds: 1 })
    expect(res).toMatchObject({
      outcome: 'failed',
      signal: 'SIGXCPU',
      error: 'cpu time limit of 1 s exceeded',
    })
  })

  it('cannot fork past its process limit, and the attempt says so', async () => {
    const res = await run('for i in $(seq 20); do sleep 5 & done; wait', { max_processes: 10 })
    expect(res.outcome).toBe('failed')
    expect(res.output).toContain('Cannot fork')
    expect(res.error).toMatch(/^exited with code \d+; process limit of 10 exceeded$/)
  })

  it('may have exactly max_processes processes', async () => {
    // The shell and four sleeps are five.
    const four = 'p=; for i in 1 2 3 4; do sleep 30 & p="$p $!"; done; kill $p'
    expect(await run(four, { max_processes: 5 })).toMatchObject({ outcome: 'succeeded' })
    const five = 'p=; for i in 1 2 3 4 5; do sleep 30 & p="$p $!"; done; kill $p'
    const res = await run(five, { max_processes: 5 })
    expect(res.error).toContain('process limit of 5 exceeded')
  })

  it('cannot write a file past its file size limit', async () => {
    const res = await run('head -c 3m /dev/zero > big', { file_size_mb: 1 })
    expect(res).toMatchObject({ outcome: 'failed', error: 'file size limit of 1 MiB exceeded' })
  })

  it('has its open files limit', async () => {
    const res = await run('ulimit -n', { open_files: 64 })
    expect(res).toMatchObject({ outcome: 'succeeded', output: '64\n' })
  })

  it('gets the worker’s defaults for the limits it does not set', async () => {
    const res = await run('ulimit -t; ulimit -f', {})
    const { cpu_seconds, file_size_mb } = JOB_LIMITS_DEFAULT
    // ulimit -f counts 512-byte blocks.
    expect(res).toMatchObject({
      outcome: 'succeeded',
      output: `${cpu_seconds}\n${file_size_mb * 2048}\n`,
    })
  })
})

describe('a worker without a cgroup', () => {
  // Not root, the worker has no cgroup here (v1 cannot be delegated): memory and processes are
  // RLIMIT_AS and RLIMIT_NPROC alone, whose hits nothing records. The error says so.
  const note = `limits in force via rlimits, with no cgroup to record a hit: memory 32 MiB, processes 10; a hit shows only as the program's own failure`

  it('names the rlimits in force when a job fails, since a hit looks like any failure', async () => {
    const { ready, results } = await workerRun(
      'bwrap',
      '/',
      { PGSCHED_FIXTURE_LIMITS: JSON.stringify({ memory_mb: 32, max_processes: 10 }) },
      ['head -c 200m /dev/zero | tail', 'for i in $(seq 20); do sleep 5 & done; wait'],
      true,
    )
    expect(ready).toBe('bwrap')
    const [memory, processes] = results
    expect(memory).toMatchObject({ outcome: 'failed', exitCode: 1 })
    expect(memory?.output).toContain('memory exhausted')
    expect(memory?.error).toBe(`exited with code 1 (${note})`)
    expect(processes).toMatchObject({ outcome: 'failed' })
    expect(processes?.output).toContain('Cannot fork')
    expect(processes?.error).toBe(`exited with code ${processes?.exitCode} (${note})`)
  }, 30_000)

  it('says nothing of the limits that a cgroup enforces', () => {
    const end = {
      code: 1,
      signal: null,
      output: '',
      startError: null,
      stopReason: null,
      info: '',
    }
    const verdict = (memory: boolean, processes: boolean) =>
      sandboxVerdict(end, {
        timeoutMs: 1_000,
        limits: { ...JOB_LIMITS_DEFAULT, memory_mb: 512, max_processes: 256 },
        hits: { memory: false, processes: false },
        statusFromBwrap: false,
        started: true,
        rlimitOnly: { memory, processes },
      }).error
    expect(verdict(false, false)).toBe('exited with code 1')
    expect(verdict(true, false)).toBe(
      "exited with code 1 (limits in force via rlimits, with no cgroup to record a hit: memory 512 MiB; a hit shows only as the program's own failure)",
    )
    expect(verdict(false, true)).toContain('no cgroup to record a hit: processes 256;')
  })
})
