/**
 * @module One cgroup per attempt, where the machine offers one: the memory limit of the whole job,
 * its process count, a record of which limit it hit, and a way to kill every process in it
 * (setsid and double forks do not leave a cgroup). cgroup v1 (memory and pids hierarchies) or a
 * delegated cgroup v2; without either, the sandbox has rlimits only.
 *
 * Job cgroups live under the worker's own cgroup, in `pgsched/<instance id>/<attempt id>`, so a
 * container's or a systemd unit's limits still hold for its jobs.
 */
import { constants, existsSync, readFileSync } from 'node:fs'
import { access, mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../../core/types.ts'
import { isStaleInstance } from './instance-id.ts'

/** What one attempt's cgroup enforces. */
interface CgroupLimits {
  memoryBytes: number
  pidsMax: number
}

/** Which limits a finished attempt ran into. */
export interface CgroupHits {
  /** The kernel OOM-killed a process of the job at the memory limit. */
  memory: boolean
  /** A fork failed at pids.max. */
  processes: boolean
}

/** The cgroup(s) of one attempt. */
export interface JobCgroup {
  /** The `cgroup.procs` files the job's first process joins before it can fork. */
  readonly procsFiles: readonly string[]
  /** Sends `sig` to every process in it but `except`; never throws. */
  signalAll(sig: NodeJS.Signals, except?: number): void
  /** SIGKILLs everything in it until it is empty; false if something is still there after a while. */
  killAll(): Promise<boolean>
  hits(): Promise<CgroupHits>
  /** Removes it (kill first); leftovers that resist are removed at a later worker's start. */
  remove(): Promise<void>
}

/** The cgroups this sandbox instance may use. */
export interface CgroupHost {
  /** e.g. 'cgroup v1 (memory, pids)'. */
  readonly description: string
  /** This instance's folders, one per hierarchy: each attempt's cgroup is a folder in them. */
  readonly instanceDirs: readonly string[]
  readonly memory: boolean
  readonly pids: boolean
  create(attemptId: string, limits: CgroupLimits): Promise<JobCgroup>
  /** Removes this instance's (empty) parent cgroups. */
  close(): Promise<void>
}

// A killed process leaves its cgroup within microseconds; past this we give up and leave the
// folder for a later worker's stale sweep rather than block the attempt's result.
const EMPTY_WAIT_MS = 5_000
const EMPTY_POLL_MS = 5

const FOLDER = 'pgsched'

// cpu: a job's processes share one scheduling entity. Without it, each session is one (the
// kernel's autogroup), and a job whose processes call setsid would outweigh every other job and
// the worker itself; in a cgroup of its own, a job gets at most its fair share of the CPU.
const V1_CONTROLLERS = ['memory', 'pids', 'cpu'] as const

interface Mount {
  root: string
  point: string
  fstype: string
  superOptions: string[]
}

/** Where this process sits in one hierarchy: the folder of its own cgroup. */
interface Place {
  /** v1: 'memory' or 'pids'; v2: 'unified'. */
  controller: string
  own: string
}

/**
 * Finds usable cgroups for `instanceId`, sweeping the cgroups of dead earlier workers first.
 * Returns null (and says why in the log) when there are none; never throws.
 */
export async function openCgroups(instanceId: string, logger: Logger): Promise<CgroupHost | null> {
  const why: string[] = []
  try {
    const host = (await openV1(instanceId, logger, why)) ?? (await openV2(instanceId, logger, why))
    if (host !== null) return host
  } catch (e) {
    why.push((e as Error).message)
  }
  logger.info(
    { reasons: why },
    'no usable cgroup: job memory and process limits are per-process rlimits only',
  )
  return null
}

function mounts(): Mount[] {
  const out: Mount[] = []
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ')
    if (left === undefined || right === undefined) continue
    const f = left.split(' ')
    const [fstype, , superOptions] = right.split(' ')
    if (fstype === undefined || f[3] === undefined || f[4] === undefined) continue
    out.push({
      root: unescapeMountField(f[3]),
      point: unescapeMountField(f[4]),
      fstype,
      superOptions: (superOptions ?? '').split(','),
    })
  }
  return out
}

// mountinfo escapes spaces and a few other bytes as \ooo.
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)))
}

function ownPaths(): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')) {
    const [, controllers, ...path] = line.split(':')
    if (controllers === undefined) continue
    for (const c of controllers === '' ? ['unified'] : controllers.split(',')) {
      out.set(c, path.join(':'))
    }
  }
  return out
}

function placeOf(mount: Mount, ownPath: string | undefined, controller: string): Place | null {
  if (ownPath === undefined) return null
  // Our path is relative to the namespace's root; a mount of a sub-tree shows what is below its root.
  const root = mount.root === '/' ? '' : mount.root
  if (root !== '' && ownPath !== root && !ownPath.startsWith(`${root}/`)) return null
  return { controller, own: join(mount.point, ownPath.slice(root.length)) }
}

async function openV1(
  instanceId: string,
  logger: Logger,
  why: string[],
): Promise<CgroupHost | null> {
  const own = ownPaths()
  const places: Place[] = []
  for (const controller of V1_CONTROLLERS) {
    const mount = mounts().find((m) => m.fstype === 'cgroup' && m.superOptions.includes(controller))
    const place = mount && placeOf(mount, own.get(controller), controller)
    if (!place) continue
    try {
      // Only root may write a v1 hierarchy (there is no delegation in v1).
      await access(place.own, constants.W_OK)
    } catch {
      why.push(`${place.own} is not writable`)
      continue
    }
    try {
      await sweepStale(join(place.own, FOLDER), logger)
      await mkdir(join(place.own, FOLDER, instanceId), { recursive: true })
      places.push(place)
    } catch (e) {
      why.push(`${controller}: ${(e as Error).message}`)
    }
  }
  if (places.length === 0) return null
  const dirs = (attemptId: string): Map<string, string> =>
    new Map(places.map((p) => [p.controller, join(p.own, FOLDER, instanceId, attemptId)]))
  return {
    description: `cgroup v1 (${places.map((p) => p.controller).join(', ')})`,
    instanceDirs: places.map((p) => join(p.own, FOLDER, instanceId)),
    memory: places.some((p) => p.controller === 'memory'),
    pids: places.some((p) => p.controller === 'pids'),
    async create(attemptId, limits) {
      const byController = dirs(attemptId)
      const cg = new V1Cgroup(byController)
      try {
        for (const dir of byController.values()) await mkdir(dir)
        const memory = byController.get('memory')
        if (memory !== undefined) {
          // memsw must stay at or above the memory limit, so the memory limit goes first.
          await writeFile(join(memory, 'memory.limit_in_bytes'), String(limits.memoryBytes))
          const memsw = join(memory, 'memory.memsw.limit_in_bytes')
          if (existsSync(memsw)) await writeFile(memsw, String(limits.memoryBytes))
        }
        const pids = byController.get('pids')
        if (pids !== undefined) await writeFile(join(pids, 'pids.max'), String(limits.pidsMax))
      } catch (e) {
        await cg.remove()
        throw e
      }
      return cg
    },
    async close() {
      for (const p of places) await rmdir(join(p.own, FOLDER, instanceId)).catch(() => {})
    },
  }
}

class V1Cgroup implements JobCgroup {
  readonly procsFiles: readonly string[]
  private readonly dirs: Map<string, string>

  constructor(dirs: Map<string, string>) {
    this.dirs = dirs
    this.procsFiles = [...dirs.values()].map((d) => join(d, 'cgroup.procs'))
  }

  signalAll(sig: NodeJS.Signals, except?: number): void {
    signalPids(members(this.procsFiles), sig, except)
  }

  killAll(): Promise<boolean> {
    return killUntilEmpty(this.procsFiles, null)
  }

  async hits(): Promise<CgroupHits> {
    const memory = this.dirs.get('memory')
    const pids = this.dirs.get('pids')
    return {
      memory: memory !== undefined && (await oomKilled(memory)),
      processes: pids !== undefined && (await counter(join(pids, 'pids.events'), 'max')) > 0,
    }
  }

  async remove(): Promise<void> {
    await this.killAll()
    for (const dir of this.dirs.values()) await removeCgroupDir(dir)
  }
}

async function openV2(
  instanceId: string,
  logger: Logger,
  why: string[],
): Promise<CgroupHost | null> {
  const mount = mounts().find((m) => m.fstype === 'cgroup2')
  const place = mount && placeOf(mount, ownPaths().get('unified'), 'unified')
  if (!place) {
    why.push('no cgroup v2 hierarchy')
    return null
  }
  // An earlier sandbox of this process may already have moved the worker into its leaf.
  const own = place.own.endsWith(`/${WORKER_LEAF}`) ? join(place.own, '..') : place.own
  const controllers = (await readFile(join(own, 'cgroup.controllers'), 'utf8')).split(/\s+/)
  if (!controllers.includes('memory') || !controllers.includes('pids')) {
    why.push(`cgroup v2 at ${own} offers no memory and pids controllers`)
    return null
  }
  await enableControllers(own, true)
  const base = join(own, FOLDER)
  await sweepStale(base, logger)
  await mkdir(base, { recursive: true })
  await enableControllers(base, false)
  const instance = join(base, instanceId)
  await mkdir(instance)
  await enableControllers(instance, false)
  return {
    description: 'cgroup v2 (memory, pids)',
    instanceDirs: [instance],
    memory: true,
    pids: true,
    async create(attemptId, limits) {
      const dir = join(instance, attemptId)
      await mkdir(dir)
      const cg = new V2Cgroup(dir)
      try {
        await writeFile(join(dir, 'memory.max'), String(limits.memoryBytes))
        const swap = join(dir, 'memory.swap.max')
        if (existsSync(swap)) await writeFile(swap, '0')
        await writeFile(join(dir, 'pids.max'), String(limits.pidsMax))
      } catch (e) {
        await cg.remove()
        throw e
      }
      return cg
    },
    async close() {
      await rmdir(instance).catch(() => {})
    },
  }
}

// cgroup v2 forbids processes in a cgroup whose controllers are handed to children: a worker
// started in a delegated cgroup (systemd Delegate=yes) moves itself into this leaf first.
const WORKER_LEAF = 'pgsched-worker'

async function enableControllers(dir: string, mayMoveSelf: boolean): Promise<void> {
  const file = join(dir, 'cgroup.subtree_control')
  try {
    await writeFile(file, '+memory +pids')
  } catch (e) {
    if (!mayMoveSelf || (e as NodeJS.ErrnoException).code !== 'EBUSY') throw e
    await mkdir(join(dir, WORKER_LEAF), { recursive: true })
    await writeFile(join(dir, WORKER_LEAF, 'cgroup.procs'), String(process.pid))
    // Still busy: other processes share the worker's cgroup; give the worker a cgroup of its own.
    await writeFile(file, '+memory +pids')
  }
}

class V2Cgroup implements JobCgroup {
  readonly procsFiles: readonly string[]
  private readonly dir: string

  constructor(dir: string) {
    this.dir = dir
    this.procsFiles = [join(dir, 'cgroup.procs')]
  }

  signalAll(sig: NodeJS.Signals, except?: number): void {
    signalPids(members(this.procsFiles), sig, except)
  }

  killAll(): Promise<boolean> {
    return killUntilEmpty(this.procsFiles, join(this.dir, 'cgroup.kill'))
  }

  async hits(): Promise<CgroupHits> {
    return {
      memory: (await counter(join(this.dir, 'memory.events'), 'oom_kill')) > 0,
      processes: (await counter(join(this.dir, 'pids.events'), 'max')) > 0,
    }
  }

  async remove(): Promise<void> {
    await this.killAll()
    await removeCgroupDir(this.dir)
  }
}

function members(procsFiles: readonly string[]): Set<number> {
  const pids = new Set<number>()
  for (const file of procsFiles) {
    try {
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        if (line !== '') pids.add(Number(line))
      }
    } catch {
      // Removed already.
    }
  }
  return pids
}

function signalPids(pids: Iterable<number>, sig: NodeJS.Signals, except?: number): void {
  for (const pid of pids) {
    if (pid === except) continue
    try {
      process.kill(pid, sig)
    } catch {
      // Gone in the meantime.
    }
  }
}

async function killUntilEmpty(
  procsFiles: readonly string[],
  killFile: string | null,
): Promise<boolean> {
  const deadline = Date.now() + EMPTY_WAIT_MS
  if (killFile !== null && existsSync(killFile)) await writeFile(killFile, '1').catch(() => {})
  for (;;) {
    const pids = members(procsFiles)
    if (pids.size === 0) return true
    if (Date.now() > deadline) return false
    // A process forking while we kill shows up in the next round; pids.max bounds the rounds.
    signalPids(pids, 'SIGKILL')
    await new Promise((r) => setTimeout(r, EMPTY_POLL_MS))
  }
}

// oom_kill came with Linux 4.13; before it, failcnt (allocations refused at the limit) is the
// best sign, though page cache reclaim at the limit counts there too.
async function oomKilled(dir: string): Promise<boolean> {
  const control = await readFile(join(dir, 'memory.oom_control'), 'utf8').catch(() => '')
  if (/^oom_kill /m.test(control)) {
    return (await counter(join(dir, 'memory.oom_control'), 'oom_kill')) > 0
  }
  const failcnt = await readFile(join(dir, 'memory.failcnt'), 'utf8').catch(() => '0')
  return failcnt.trim() !== '0'
}

async function counter(file: string, key: string): Promise<number> {
  try {
    const text = await readFile(file, 'utf8')
    const line = text.split('\n').find((l) => l.startsWith(`${key} `))
    return line === undefined ? 0 : Number(line.slice(key.length + 1))
  } catch {
    return 0
  }
}

async function removeCgroupDir(dir: string): Promise<void> {
  // An exited process may still count for a moment after it leaves cgroup.procs.
  for (let i = 0; i < 50; i++) {
    try {
      await rmdir(dir)
      return
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return
      if (code !== 'EBUSY') throw e
      await new Promise((r) => setTimeout(r, EMPTY_POLL_MS))
    }
  }
}

async function sweepStale(base: string, logger: Logger): Promise<void> {
  let names: string[]
  try {
    names = await readdir(base)
  } catch {
    return
  }
  for (const name of names.filter(isStaleInstance)) {
    const instance = join(base, name)
    try {
      for (const entry of await readdir(instance, { withFileTypes: true })) {
        if (!entry.isDirectory()) continue
        const dir = join(instance, entry.name)
        const killFile = join(dir, 'cgroup.kill')
        await killUntilEmpty([join(dir, 'cgroup.procs')], existsSync(killFile) ? killFile : null)
        await removeCgroupDir(dir)
      }
      await rmdir(instance)
      logger.info({ cgroup: instance }, 'removed the cgroups of a dead worker')
    } catch (e) {
      logger.warn({ err: e, cgroup: instance }, 'could not remove a dead worker’s cgroups')
    }
  }
}
