/**
 * @module Per-process resource limits of a job (setrlimit through util-linux prlimit), which every
 * sandboxed mode applies whether or not a cgroup is available.
 */
import { readFileSync } from 'node:fs'
import type { JobLimits } from '../../core/types.ts'

/** A process past its CPU limit gets SIGXCPU, then SIGKILL this much later if it ignores that. */
const CPU_KILL_AFTER_XCPU_SECONDS = 5

const MIB = 1024 * 1024

/** The limits prlimit understands, by its option name. */
type Resource = 'cpu' | 'fsize' | 'nproc' | 'nofile' | 'as'

/** Hard limits of the worker; a job started without root can only lower them. */
export type HardLimits = Readonly<Record<Resource, number>>

const LIMITS_ROWS: Readonly<Record<string, Resource>> = {
  'Max cpu time': 'cpu',
  'Max file size': 'fsize',
  'Max processes': 'nproc',
  'Max open files': 'nofile',
  'Max address space': 'as',
}

/** Reads the worker's own hard limits from /proc/self/limits. */
export function readHardLimits(): HardLimits {
  const hard: Record<Resource, number> = {
    cpu: Infinity,
    fsize: Infinity,
    nproc: Infinity,
    nofile: Infinity,
    as: Infinity,
  }
  for (const line of readFileSync('/proc/self/limits', 'utf8').split('\n')) {
    const label = Object.keys(LIMITS_ROWS).find((l) => line.startsWith(l))
    if (label === undefined) continue
    const value = line.slice(label.length).trim().split(/\s+/)[1]
    const resource = LIMITS_ROWS[label] as Resource
    hard[resource] = value === undefined || value === 'unlimited' ? Infinity : Number(value)
  }
  return hard
}

/** What to limit beyond the always-on cpu, file size and open files. */
interface RlimitChoice {
  /** RLIMIT_NPROC, or null to leave it to the cgroup (it counts per user, not per job). */
  nproc: number | null
  /** RLIMIT_AS in bytes, or null: it counts reserved address space and breaks V8, Go and Java. */
  addressSpaceBytes: number | null
}

/** The arguments of `prlimit <args> -- command…` for one job, never above the worker's hard limits. */
export function prlimitArgs(
  limits: Required<JobLimits>,
  choice: RlimitChoice,
  hard: HardLimits,
): string[] {
  const cap = (resource: Resource, n: number): number => Math.min(n, hard[resource])
  const cpuSoft = cap('cpu', limits.cpu_seconds)
  const args = [
    `--cpu=${cpuSoft}:${cap('cpu', limits.cpu_seconds + CPU_KILL_AFTER_XCPU_SECONDS)}`,
    `--fsize=${cap('fsize', limits.file_size_mb * MIB)}`,
    `--nofile=${cap('nofile', limits.open_files)}`,
  ]
  if (choice.nproc !== null) args.push(`--nproc=${cap('nproc', choice.nproc)}`)
  if (choice.addressSpaceBytes !== null) {
    args.push(`--as=${cap('as', choice.addressSpaceBytes)}`)
  }
  return args
}
