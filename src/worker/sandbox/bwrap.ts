/**
 * @module Mode `bwrap`: the bubblewrap command line that puts a job into its own user, PID,
 * network, IPC, UTS, mount and cgroup namespaces, with a read-only system, a minimal /etc, its own
 * /proc, /dev and /tmp, and its scratch folder as the only writable place it shares with the host.
 */
import { lstatSync, readlinkSync } from 'node:fs'

/** Where the job sees its scratch folder; also its cwd and HOME. */
export const SCRATCH_IN_SANDBOX = '/scratch'

/** The uid and gid a job has inside the sandbox when the worker is not root (see bwrapArgs). */
export const NOBODY_ID = 65534

/** The hostname a job sees. */
const SANDBOX_HOSTNAME = 'pgsched-job'

// Folders bound read-only: the system's programs and libraries (Debian 12 has /bin, /sbin and
// /lib* as symlinks into /usr; older layouts have real folders).
const SYSTEM_TOP = ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'] as const

// Host /etc entries a job needs to behave normally; nothing that names hosts' secrets or users.
// /etc/alternatives holds only symlinks (awk, editor, …), ld.so.cache speeds up every exec.
const ETC_ALWAYS = ['hosts', 'nsswitch.conf', 'ld.so.cache', 'localtime', 'alternatives'] as const
// Only with network access: name resolution and the CA bundle for TLS.
const ETC_NETWORK = [
  'resolv.conf',
  'host.conf',
  'gai.conf',
  'ssl/certs',
  'ssl/openssl.cnf',
] as const

/** The read-only view of /usr and the top-level system folders, computed once per worker. */
export function systemMounts(): string[] {
  const args = ['--ro-bind', '/usr', '/usr']
  for (const path of SYSTEM_TOP) {
    try {
      const st = lstatSync(path)
      if (st.isSymbolicLink()) args.push('--symlink', readlinkSync(path), path)
      else if (st.isDirectory()) args.push('--ro-bind', path, path)
    } catch {
      // Not on this system (e.g. /libx32).
    }
  }
  return args
}

/** Whether a host program will be visible at the same path inside the sandbox. */
export function visibleInSandbox(path: string): boolean {
  return ['/usr/', ...SYSTEM_TOP.map((p) => `${p}/`)].some((prefix) => path.startsWith(prefix))
}

/** The files the sandbox writes for the job's /etc: its user and group, and root's. */
export function etcFiles(user: { name: string; uid: number; gid: number }): {
  passwd: string
  group: string
} {
  const home = SCRATCH_IN_SANDBOX
  const lines = [`root:x:0:0:root:/nonexistent:/usr/sbin/nologin`]
  const groups = [`root:x:0:`]
  if (user.uid !== NOBODY_ID) {
    lines.push(`${user.name}:x:${user.uid}:${user.gid}:pgsched job:${home}:/bin/sh`)
    groups.push(`${user.name}:x:${user.gid}:`)
  }
  lines.push(
    `nobody:x:${NOBODY_ID}:${NOBODY_ID}:nobody:${user.uid === NOBODY_ID ? home : '/nonexistent'}:/bin/sh`,
  )
  groups.push(`nogroup:x:${NOBODY_ID}:`)
  return { passwd: `${lines.join('\n')}\n`, group: `${groups.join('\n')}\n` }
}

/** Everything one bwrap invocation depends on. */
interface BwrapPlan {
  /** From systemMounts(). */
  system: readonly string[]
  /** Host paths of the generated passwd and group files. */
  passwd: string
  group: string
  /** Host path of the attempt's scratch folder. */
  scratch: string
  /** Uid and gid inside the sandbox. */
  uid: number
  gid: number
  network: boolean
  /** bwrap ≥ 0.8 can forbid user namespaces inside the sandbox. */
  disableUserns: boolean
  /** The job's whole environment. */
  env: Record<string, string>
  /** File descriptor bwrap writes its info (the host pid of the sandbox's init) to. */
  infoFd: number
}

/** The bwrap options (without the program and the command after `--`). */
export function bwrapArgs(plan: BwrapPlan): string[] {
  const args = [
    '--unshare-all',
    // --unshare-all implies it, but --disable-userns wants it said.
    '--unshare-user',
    ...(plan.disableUserns ? ['--disable-userns'] : []),
    ...(plan.network ? ['--share-net'] : []),
    // Not root: bwrap maps the worker's uid to this one inside, so the job is `nobody` in its
    // own namespace and the worker's uid (with no capabilities) outside it.
    '--uid',
    String(plan.uid),
    '--gid',
    String(plan.gid),
    '--hostname',
    SANDBOX_HOSTNAME,
    // If the worker dies (even SIGKILL), the kernel kills bwrap, its init, and with the PID
    // namespace's init every process of the job.
    '--die-with-parent',
    // A new session: the job cannot push characters into a terminal the worker runs in (TIOCSTI).
    '--new-session',
    ...plan.system,
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--tmpfs',
    '/tmp',
    '--ro-bind',
    plan.passwd,
    '/etc/passwd',
    '--ro-bind',
    plan.group,
    '/etc/group',
  ]
  for (const name of [...ETC_ALWAYS, ...(plan.network ? ETC_NETWORK : [])]) {
    args.push('--ro-bind-try', `/etc/${name}`, `/etc/${name}`)
  }
  args.push(
    '--bind',
    plan.scratch,
    SCRATCH_IN_SANDBOX,
    '--chdir',
    SCRATCH_IN_SANDBOX,
    // The root of the sandbox is bwrap's own tmpfs; read-only, the job can write only in /tmp
    // and its scratch folder.
    '--remount-ro',
    '/',
    '--clearenv',
  )
  for (const [key, value] of Object.entries(plan.env)) args.push('--setenv', key, value)
  args.push('--info-fd', String(plan.infoFd))
  return args
}

/** The host pid of the sandbox's init from bwrap's --info-fd output, once it has written it. */
export function sandboxInitPid(info: string): number | null {
  const m = /"child-pid"\s*:\s*(\d+)/.exec(info)
  return m ? Number(m[1]) : null
}
