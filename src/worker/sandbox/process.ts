/**
 * @module Runs one process tree to its end: a wall-clock timeout, cancellation with SIGTERM then
 * SIGKILL, leftovers stopped once the main process exits, and a bounded tail of its output. Which
 * processes a signal reaches is the caller's: a process group, a cgroup, a PID namespace.
 */
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

/** When a command is stopped, and how hard. */
export interface StopOptions {
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
}

/** What a SignalJob knows about the spawned process. */
interface SpawnedState {
  pid: number
  /** Whether it has exited (its pid may then belong to someone else). */
  exited: boolean
  /** What it wrote to fd 3 so far. */
  info: string
}

/** Sends a signal to every process of the job. */
export type SignalJob = (sig: 'SIGTERM' | 'SIGKILL', state: SpawnedState) => void

/** One process to spawn, and how to reach its descendants. */
export interface ProcessSpec extends StopOptions {
  file: string
  args: readonly string[]
  env: Record<string, string>
  cwd: string
  /** Opens a fourth pipe (fd 3) whose text is returned as `info` (bwrap --info-fd). */
  infoPipe?: boolean
  /** @default signals the process group of the spawned process */
  signalJob?: SignalJob
}

/** How a process tree ended, before anyone interprets it. */
export interface ProcessEnd {
  code: number | null
  signal: string | null
  output: string
  /** Set when the worker stopped it. */
  stopReason: 'timed_out' | 'cancelled' | null
  /** Set when it could not be spawned at all. */
  startError: string | null
  /** What the process wrote to fd 3. */
  info: string
}

// Once the job has been SIGKILLed, only a process that escaped it can still hold our pipes;
// give the kernel a moment to flush, then stop waiting.
const PIPE_DRAIN_MS = 1_000

// setTimeout silently turns anything above this into 1 ms.
const MAX_TIMER_MS = 2 ** 31 - 1

// Info from bwrap is a few hundred bytes; anything beyond this is not what we asked for.
const INFO_LIMIT_BYTES = 4096

/** Signals the process group led by the spawned process (it is spawned detached, as a session leader). */
export const signalProcessGroup: SignalJob = (sig, { pid }) => {
  try {
    process.kill(-pid, sig)
  } catch {
    // ESRCH means the group is already gone; anything else (EPERM) would only crash the worker
    // from a timer, and 'close' still reports what happened.
  }
}

/** Spawns the process, waits for it and its pipes, and never throws. */
export function runProcess(spec: ProcessSpec): Promise<ProcessEnd> {
  if (spec.signal?.aborted) return Promise.resolve(ended({ stopReason: 'cancelled' }))

  let child: ChildProcess
  try {
    child = spawn(spec.file, spec.args, {
      cwd: spec.cwd,
      env: spec.env,
      // A new session makes the process a group leader, so one kill reaches every descendant
      // that stays in the group.
      detached: true,
      stdio: spec.infoPipe ? ['ignore', 'pipe', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe'],
    })
  } catch (err) {
    // Invalid arguments (e.g. a NUL byte in env) throw synchronously.
    return Promise.resolve(ended({ startError: startError(err, spec.cwd, spec.file) }))
  }
  const signalJob = spec.signalJob ?? signalProcessGroup

  return new Promise((resolve) => {
    const tail = new TailBuffer(OUTPUT_TAIL_BYTES)
    const info: Buffer[] = []
    let infoBytes = 0
    const graceMs = spec.killGraceMs ?? KILL_GRACE_MS_DEFAULT
    let stopReason: 'timed_out' | 'cancelled' | null = null
    let exited = false
    let stopping = false
    let settled = false
    let cancelTimeout = (): void => {}
    let graceTimer: NodeJS.Timeout | undefined
    let drainTimer: NodeJS.Timeout | undefined

    const signal = (sig: 'SIGTERM' | 'SIGKILL'): void => {
      if (child.pid === undefined) return
      signalJob(sig, { pid: child.pid, exited, info: Buffer.concat(info).toString('utf8') })
    }

    const stopJob = (ms: number): void => {
      if (stopping) return
      stopping = true
      signal('SIGTERM')
      graceTimer = setTimeout(
        () => {
          signal('SIGKILL')
          drainTimer = setTimeout(() => {
            child.stdout?.destroy()
            child.stderr?.destroy()
            child.stdio[3]?.destroy()
          }, PIPE_DRAIN_MS)
        },
        Math.min(Math.max(ms, 0), MAX_TIMER_MS),
      )
    }

    // After the process has exited its status is final, so late timeouts and aborts change nothing.
    const stopFor = (reason: 'timed_out' | 'cancelled'): void => {
      if (exited || stopReason !== null) return
      stopReason = reason
      stopJob(reason === 'cancelled' ? (spec.cancelKillGraceMs ?? graceMs) : graceMs)
    }

    const onAbort = (): void => stopFor('cancelled')

    const finish = (value: ProcessEnd): void => {
      if (settled) return
      settled = true
      cancelTimeout()
      clearTimeout(graceTimer)
      clearTimeout(drainTimer)
      spec.signal?.removeEventListener('abort', onAbort)
      resolve(value)
    }

    cancelTimeout = startTimer(spec.timeoutMs, () => stopFor('timed_out'))
    spec.signal?.addEventListener('abort', onAbort, { once: true })

    child.stdout?.on('data', (chunk: Buffer) => tail.push(chunk))
    child.stderr?.on('data', (chunk: Buffer) => tail.push(chunk))
    child.stdio[3]?.on('data', (chunk: Buffer) => {
      if (infoBytes >= INFO_LIMIT_BYTES) return
      info.push(chunk)
      infoBytes += chunk.length
    })

    child.on('error', (err) => {
      // Errors after a successful spawn are not expected (we never use child.kill); 'close' still settles those.
      if (child.pid === undefined) {
        finish(ended({ startError: startError(err, spec.cwd, spec.file) }))
      }
    })

    child.on('exit', () => {
      exited = true
      cancelTimeout()
      spec.signal?.removeEventListener('abort', onAbort)
      // Background leftovers ('cmd &') would hold the pipes open and outlive the job; the job's
      // lifetime is the spawned process's.
      stopJob(graceMs)
    })

    child.on('close', (code, sig) => {
      finish({
        code,
        signal: sig,
        output: tail.toString(),
        stopReason,
        startError: null,
        info: Buffer.concat(info).toString('utf8'),
      })
    })
  })
}

function ended(part: Partial<ProcessEnd>): ProcessEnd {
  return {
    code: null,
    signal: null,
    output: '',
    stopReason: null,
    startError: null,
    info: '',
    ...part,
  }
}

function startError(err: unknown, cwd: string, file: string): string {
  const code = (err as NodeJS.ErrnoException).code
  // Node reports a missing cwd as 'spawn <file> ENOENT', which points at the wrong path.
  if (code === 'ENOENT' && existsSync(file) && !existsSync(cwd)) {
    return `failed to start: working directory ${cwd} does not exist`
  }
  return `failed to start: ${err instanceof Error ? err.message : String(err)}`
}

/** '200 ms' or '1.5 s'. */
export function formatDuration(ms: number): string {
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
