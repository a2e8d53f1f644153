import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'

/** What a finished command reports. */
export interface CommandResult {
  /** Exit status, or null when the process was killed by a signal. */
  exitCode: number | null
  /** Signal that killed the process (e.g. 'SIGTERM'), or null when it exited on its own. */
  signal: string | null
  /** The last OUTPUT_TAIL_BYTES of combined stdout+stderr, decoded as utf-8 (lossy at the cut). */
  output: string
  /** How the run ended, from the scheduler's point of view. */
  outcome: 'succeeded' | 'failed' | 'timed_out' | 'cancelled'
  /** Human sentence explaining a non-success, e.g. 'exited with code 3'; null on success. */
  error: string | null
}

/** How many bytes of the most recent combined output a result keeps. */
export const OUTPUT_TAIL_BYTES = 64 * 1024

/** Default wait between SIGTERM and SIGKILL when stopping a command. */
export const KILL_GRACE_MS_DEFAULT = 10_000

/** How to run one shell command. */
export interface CommandOptions {
  /** Shell command line, run with /bin/sh -c. */
  command: string
  /** Wall-clock limit before the command is stopped and reported as timed_out. */
  timeoutMs: number
  /**
   * After SIGTERM, wait this long then SIGKILL.
   * @default KILL_GRACE_MS_DEFAULT
   */
  killGraceMs?: number
  /** Aborting cancels the command with the same SIGTERM then SIGKILL sequence. */
  signal?: AbortSignal
  /**
   * The grace after SIGTERM when the command is cancelled (aborted) rather than timed out: a user
   * who cancels expects the process gone within seconds.
   * @default killGraceMs
   */
  cancelKillGraceMs?: number
  /** Extra environment variables on top of the small inherited allowlist. */
  env?: Record<string, string>
  /** Working directory; defaults to the worker's. */
  cwd?: string
}

// The worker's own environment holds secrets (DATABASE_URL, PGSCHED_JWT_SECRET),
// so jobs only see what a shell needs to behave normally.
const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'USER', 'SHELL'] as const

// Once the group has been SIGKILLed, only a process that escaped it (setsid)
// can still hold our pipes; give the kernel a moment to flush, then stop waiting.
const PIPE_DRAIN_MS = 1_000

// setTimeout silently turns anything above this into 1 ms.
const MAX_TIMER_MS = 2 ** 31 - 1

/** Runs a shell command in its own process group with a timeout, cancellation and a bounded output tail. */
export function runCommand(opts: CommandOptions): Promise<CommandResult> {
  if (opts.signal?.aborted) {
    return Promise.resolve(result(null, null, '', 'cancelled', 'cancelled'))
  }

  const env: Record<string, string> = {}
  for (const key of INHERITED_ENV) {
    const value = process.env[key]
    if (value !== undefined) env[key] = value
  }
  Object.assign(env, opts.env)

  let child: ChildProcess
  try {
    child = spawn('/bin/sh', ['-c', opts.command], {
      cwd: opts.cwd,
      env,
      // A new session makes the shell a group leader, so one kill reaches every descendant.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
  } catch (err) {
    // Invalid arguments (e.g. a NUL byte in env) throw synchronously.
    return Promise.resolve(result(null, null, '', 'failed', startError(err, opts.cwd)))
  }

  return new Promise((resolve) => {
    const tail = new TailBuffer(OUTPUT_TAIL_BYTES)
    const graceMs = opts.killGraceMs ?? KILL_GRACE_MS_DEFAULT
    let stopReason: 'timed_out' | 'cancelled' | null = null
    let exited = false
    let stopping = false
    let settled = false
    let cancelTimeout = (): void => {}
    let graceTimer: NodeJS.Timeout | undefined
    let drainTimer: NodeJS.Timeout | undefined

    const signalGroup = (sig: NodeJS.Signals): void => {
      const pid = child.pid
      if (pid === undefined) return
      try {
        process.kill(-pid, sig)
      } catch {
        // ESRCH means the group is already gone; anything else (EPERM) would only
        // crash the worker from a timer, and 'close' still reports what happened.
      }
    }

    const stopGroup = (ms: number): void => {
      if (stopping) return
      stopping = true
      signalGroup('SIGTERM')
      graceTimer = setTimeout(
        () => {
          signalGroup('SIGKILL')
          drainTimer = setTimeout(() => {
            child.stdout?.destroy()
            child.stderr?.destroy()
          }, PIPE_DRAIN_MS)
        },
        Math.min(Math.max(ms, 0), MAX_TIMER_MS),
      )
    }

    // After the shell has exited its status is final, so late timeouts and aborts change nothing.
    const stopFor = (reason: 'timed_out' | 'cancelled'): void => {
      if (exited || stopReason !== null) return
      stopReason = reason
      stopGroup(reason === 'cancelled' ? (opts.cancelKillGraceMs ?? graceMs) : graceMs)
    }

    const onAbort = (): void => stopFor('cancelled')

    const cleanup = (): void => {
      cancelTimeout()
      clearTimeout(graceTimer)
      clearTimeout(drainTimer)
      opts.signal?.removeEventListener('abort', onAbort)
    }

    const finish = (value: CommandResult): void => {
      if (settled) return
      settled = true
      cleanup()
      resolve(value)
    }

    cancelTimeout = startTimer(opts.timeoutMs, () => stopFor('timed_out'))
    opts.signal?.addEventListener('abort', onAbort, { once: true })

    child.stdout?.on('data', (chunk: Buffer) => tail.push(chunk))
    child.stderr?.on('data', (chunk: Buffer) => tail.push(chunk))

    child.on('error', (err) => {
      // Errors after a successful spawn are not expected (we never use child.kill); 'close' still settles those.
      if (child.pid === undefined) {
        finish(result(null, null, '', 'failed', startError(err, opts.cwd)))
      }
    })

    child.on('exit', () => {
      exited = true
      cancelTimeout()
      opts.signal?.removeEventListener('abort', onAbort)
      // Background leftovers ('cmd &') would hold the pipes open and outlive the job; the job's lifetime is the shell's.
      stopGroup(graceMs)
    })

    child.on('close', (code, sig) => {
      const output = tail.toString()
      if (stopReason === 'timed_out') {
        finish(
          result(
            code,
            sig,
            output,
            'timed_out',
            `timed out after ${formatDuration(opts.timeoutMs)}`,
          ),
        )
      } else if (stopReason === 'cancelled') {
        finish(result(code, sig, output, 'cancelled', 'cancelled'))
      } else if (code === 0) {
        finish(result(0, null, output, 'succeeded', null))
      } else if (code !== null) {
        finish(result(code, null, output, 'failed', `exited with code ${code}`))
      } else {
        finish(result(null, sig, output, 'failed', `killed by ${sig ?? 'an unknown signal'}`))
      }
    })
  })
}

function result(
  exitCode: number | null,
  signal: string | null,
  output: string,
  outcome: CommandResult['outcome'],
  error: string | null,
): CommandResult {
  return { exitCode, signal, output, outcome, error }
}

function startError(err: unknown, cwd: string | undefined): string {
  const code = (err as NodeJS.ErrnoException).code
  // Node reports a missing cwd as 'spawn /bin/sh ENOENT', which points at the wrong path.
  if (code === 'ENOENT' && cwd !== undefined && !existsSync(cwd)) {
    return `failed to start: working directory ${cwd} does not exist`
  }
  return `failed to start: ${err instanceof Error ? err.message : String(err)}`
}

function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`
  return `${Number((ms / 1000).toFixed(3))} s`
}

// Chains timers so limits beyond ~24.8 days neither overflow nor fire early; returns a canceller.
function startTimer(ms: number, fn: () => void): () => void {
  if (!Number.isFinite(ms)) return () => {}
  const deadline = Date.now() + Math.max(ms, 0)
  let timer: NodeJS.Timeout | undefined
  const arm = (): void => {
    const remaining = deadline - Date.now()
    if (remaining > MAX_TIMER_MS) {
      timer = setTimeout(arm, MAX_TIMER_MS)
    } else {
      timer = setTimeout(fn, Math.max(remaining, 0))
    }
  }
  arm()
  return () => clearTimeout(timer)
}

// Keeps only the newest `limit` bytes, copying the partial head chunk so a large
// chunk's discarded bytes can be garbage-collected.
class TailBuffer {
  private readonly limit: number
  private chunks: Buffer[] = []
  private size = 0

  constructor(limit: number) {
    this.limit = limit
  }

  push(chunk: Buffer): void {
    if (chunk.length >= this.limit) {
      this.chunks = [Buffer.from(chunk.subarray(chunk.length - this.limit))]
      this.size = this.limit
      return
    }
    this.chunks.push(chunk)
    this.size += chunk.length
    while (this.size > this.limit) {
      const head = this.chunks[0] as Buffer
      const excess = this.size - this.limit
      if (head.length <= excess) {
        this.chunks.shift()
        this.size -= head.length
      } else {
        this.chunks[0] = Buffer.from(head.subarray(excess))
        this.size -= excess
      }
    }
  }

  toString(): string {
    return Buffer.concat(this.chunks, this.size).toString('utf8')
  }
}
