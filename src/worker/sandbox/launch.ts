/**
 * @module The process chain that starts one attempt in each mode. As root it is
 * `sh` (joins the attempt's cgroups before anything can fork) → `setpriv` (drops to the job user
 * for good) → `bwrap` (namespaces) → `prlimit` (rlimits) → `/bin/sh -c <command>`, each exec'ing
 * the next, so bwrap's parent is the worker itself and --die-with-parent holds.
 */
import type { JobLimits } from '../../core/types.ts'
import { bwrapArgs, NOBODY_ID, SCRATCH_IN_SANDBOX, sandboxInitPid } from './bwrap.ts'
import type { JobCgroup } from './cgroup.ts'
import type { JobUser } from './job-user.ts'
import {
  type ProcessSpec,
  type SignalJob,
  type StopOptions,
  signalProcessGroup,
} from './process.ts'
import { type HardLimits, prlimitArgs } from './rlimits.ts'

/** bwrap's own two processes (its monitor outside, its init inside) count in the job's cgroup. */
export const BWRAP_PROCESSES = 2

// What a job finds on PATH: the system's folders, never the worker's (node_modules/.bin, ~/bin).
const JOB_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin'

// Joins the cgroups given before `--`, then becomes the rest: the job cannot fork before it is in.
const JOIN_CGROUPS = `for f do shift; [ "$f" = -- ] && break; echo $$ > "$f" || { echo "pgsched: cannot join the job's cgroup $f" >&2; exit 125; }; done; exec "$@"`

// bwrap writes the host pid of the sandbox's init here (the fourth stdio pipe).
const INFO_FD = 3

const MIB = 1024 * 1024

/** What a worker's sandbox found at start and every launch uses. */
export interface LaunchContext {
  programs: { bwrap: string; setpriv: string; prlimit: string }
  user: JobUser
  /** From systemMounts(). */
  system: readonly string[]
  /** Host paths of the job's /etc/passwd and /etc/group. */
  etc: { passwd: string; group: string }
  disableUserns: boolean
  hard: HardLimits
  /** The cgroup controllers each attempt gets; null: none. */
  cgroups: { memory: boolean; pids: boolean } | null
}

/** One attempt to launch. */
interface LaunchRequest extends StopOptions {
  command: string
  env?: Record<string, string>
  network: boolean
  limits: Required<JobLimits>
  /** Host path of its scratch folder. */
  scratch: string
  cgroup: JobCgroup | null
}

/** Mode `bwrap`: namespaces, the job user, cgroup and rlimits. */
export function bwrapLaunch(ctx: LaunchContext, req: LaunchRequest): ProcessSpec {
  const { user, programs } = ctx
  const { limits } = req
  const args = bwrapArgs({
    system: ctx.system,
    passwd: ctx.etc.passwd,
    group: ctx.etc.group,
    scratch: req.scratch,
    uid: user.switchUser ? user.uid : NOBODY_ID,
    gid: user.switchUser ? user.gid : NOBODY_ID,
    network: req.network,
    disableUserns: ctx.disableUserns,
    env: { ...jobEnv(SCRATCH_IN_SANDBOX), ...req.env },
    infoFd: INFO_FD,
  })
  // Applied inside the sandbox, RLIMIT_NPROC counts the job's processes in its own user
  // namespace, not every process of the job user on the host. Its init is one more, and one
  // more again lets the cgroup's pids.max (exact, and recorded in pids.events) hit first.
  const rlimits = prlimitArgs(
    limits,
    {
      nproc: limits.max_processes + BWRAP_PROCESSES,
      addressSpaceBytes: ctx.cgroups?.memory ? null : limits.memory_mb * MIB,
    },
    ctx.hard,
  )
  const argv = [
    ...joinCgroups(req.cgroup),
    ...dropToJobUser(ctx),
    programs.bwrap,
    ...args,
    '--',
    programs.prlimit,
    ...rlimits,
    '--',
    '/bin/sh',
    '-c',
    req.command,
  ]
  const cgroup = req.cgroup
  const signalJob: SignalJob = (sig, state) => {
    const init = sandboxInitPid(state.info)
    if (!state.exited) {
      if (init === null) {
        // Not started yet: stop the chain itself; bwrap's init follows its parent.
        signalProcessGroup(sig, state)
      } else {
        // The job's processes share the session of the sandbox's init, which ignores SIGTERM
        // from outside; SIGKILL to the init ends the whole PID namespace.
        try {
          process.kill(sig === 'SIGTERM' ? -init : init, sig)
        } catch {
          // Gone already.
        }
      }
    }
    // bwrap's monitor would take the sandbox down at once on SIGTERM; spare it the grace.
    cgroup?.signalAll(sig, sig === 'SIGTERM' ? state.pid : undefined)
  }
  return {
    ...stopOptions(req),
    file: argv[0] as string,
    args: argv.slice(1),
    env: { PATH: JOB_PATH },
    cwd: '/',
    infoPipe: true,
    signalJob,
  }
}

/** Mode `rlimits`: the job user, its scratch folder, cgroup and rlimits; no namespaces. */
export function rlimitsLaunch(ctx: LaunchContext, req: LaunchRequest): ProcessSpec {
  const { limits } = req
  // RLIMIT_NPROC counts every process of the user, all its jobs together: only a root worker's
  // dedicated job user gets it, and only when no pids cgroup counts per job.
  const nproc = ctx.user.switchUser && !ctx.cgroups?.pids ? limits.max_processes : null
  const rlimits = prlimitArgs(
    limits,
    { nproc, addressSpaceBytes: ctx.cgroups?.memory ? null : limits.memory_mb * MIB },
    ctx.hard,
  )
  const argv = [
    ...joinCgroups(req.cgroup),
    ctx.programs.prlimit,
    ...rlimits,
    '--',
    ...dropToJobUser(ctx),
    '/bin/sh',
    '-c',
    req.command,
  ]
  const cgroup = req.cgroup
  const signalJob: SignalJob = (sig, state) => {
    signalProcessGroup(sig, state)
    // A process that left the group (setsid) is still in the cgroup.
    cgroup?.signalAll(sig)
  }
  return {
    ...stopOptions(req),
    file: argv[0] as string,
    args: argv.slice(1),
    env: { ...jobEnv(req.scratch), TMPDIR: req.scratch, ...req.env },
    cwd: req.scratch,
    signalJob,
  }
}

/** Mode `none`: the worker's own user, its scratch folder as cwd and HOME, a minimal environment. */
export function noneLaunch(req: LaunchRequest): ProcessSpec {
  return {
    ...stopOptions(req),
    file: '/bin/sh',
    args: ['-c', req.command],
    env: { ...inheritedEnv(['PATH', 'LANG', 'TZ']), HOME: req.scratch, ...req.env },
    cwd: req.scratch,
  }
}

function stopOptions(req: LaunchRequest): StopOptions {
  const { timeoutMs, killGraceMs, cancelKillGraceMs, signal } = req
  return {
    timeoutMs,
    ...(killGraceMs === undefined ? {} : { killGraceMs }),
    ...(cancelKillGraceMs === undefined ? {} : { cancelKillGraceMs }),
    ...(signal === undefined ? {} : { signal }),
  }
}

function joinCgroups(cgroup: JobCgroup | null): string[] {
  if (cgroup === null) return []
  return ['/bin/sh', '-c', JOIN_CGROUPS, 'pgsched-join', ...cgroup.procsFiles, '--']
}

// No way back: no new privileges (setuid programs do nothing), no capabilities, no groups.
function dropToJobUser(ctx: LaunchContext): string[] {
  const u = ctx.user
  if (!u.switchUser) return []
  return [
    ctx.programs.setpriv,
    `--reuid=${u.uid}`,
    `--regid=${u.gid}`,
    '--clear-groups',
    '--no-new-privs',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--',
  ]
}

function jobEnv(home: string): Record<string, string> {
  return { PATH: JOB_PATH, HOME: home, LANG: 'C.UTF-8', ...inheritedEnv(['LANG', 'TZ']) }
}

function inheritedEnv(keys: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const key of keys) {
    const value = process.env[key]
    if (value !== undefined) env[key] = value
  }
  return env
}
