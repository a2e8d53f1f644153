/** @module Measuring: percentiles, CPU time and memory of processes (Linux /proc), rates. */
import { readdirSync, readFileSync } from 'node:fs'

/** The p-th percentile (0-100) of `values`, nearest rank; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

const TICKS_PER_SECOND = 100

/** CPU seconds (user + system) used so far by `pid` and its threads; 0 when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after "pid (comm) ".
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND
  } catch {
    return 0
  }
}

/** Every process whose parent chain leads to one of `roots` (roots included). */
export function processTree(roots: readonly number[]): number[] {
  const parent = new Map<number, number>()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {}
  }
  const out = new Set(roots)
  let grew = true
  while (grew) {
    grew = false
    for (const [pid, ppid] of parent) {
      if (!out.has(pid) && out.has(ppid)) {
        out.add(pid)
        grew = true
      }
    }
  }
  return [...out]
}

/**
 * CPU accounting over a window for the process trees under `roots`: call stop() at the end.
 * Processes that start and end inside the window are missed; Postgres backends live as long as
 * their connections, which the workloads keep open.
 */
export function cpuWindow(roots: () => number[]): { stop(): number } {
  const start = new Map(processTree(roots()).map((p) => [p, cpuSeconds(p)]))
  return {
    stop() {
      let total = 0
      for (const p of processTree(roots())) total += cpuSeconds(p) - (start.get(p) ?? 0)
      return total
    },
  }
}

/** Resident memory of `pid` in MiB. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : Number.NaN
}

/** What a figure or section that ran out of time says: `slow: did not finish in N s`. */
export const slowNote = (limitMs: number) =>
  `slow: did not finish in ${Math.round(limitMs / 1000)} s`

/**
 * A workload's wait that ran past its time limit. The run catches it, records the workload as
 * slow with what it reached, and goes on with the next workload.
 */
export class TimeLimit extends Error {
  readonly what: string
  readonly limitMs: number
  /** What it had reached, e.g. "1,234 of 2,000 runs in 200 s". */
  readonly reached: string | undefined
  constructor(what: string, limitMs: number, reached?: string) {
    super(`${slowNote(limitMs)} waiting for ${what}${reached ? ` (reached ${reached})` : ''}`)
    this.what = what
    this.limitMs = limitMs
    this.reached = reached
  }
}

/** Polls `check` every `everyMs` until it is truthy; false once `timeoutMs` have passed. */
export async function within(
  check: () => Promise<boolean>,
  timeoutMs: number,
  everyMs = 50,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) return false
    await new Promise((r) => setTimeout(r, everyMs))
  }
  return true
}

/** Polls `check` every `everyMs` until it is truthy; throws a TimeLimit after `timeoutMs`. */
export async function until(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
  everyMs = 50,
): Promise<void> {
  if (!(await within(check, timeoutMs, everyMs))) throw new TimeLimit(what, timeoutMs)
}

/** Milliseconds since `t0` (performance.now()). */
export const since = (t0: number) => performance.now() - t0
