/**
 * @module What the machine offers a sandbox: the programs it needs, the bwrap options it knows,
 * and an operator's sentence for why a probe sandbox would not start.
 */
import { execFile } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

// Where Debian and most distributions keep these programs, in case PATH is minimal.
const SYSTEM_DIRS = ['/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/local/bin']

/** The absolute path of a program, from PATH or the usual system folders; null if absent. */
export function findProgram(name: string): string | null {
  const dirs = [
    ...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')),
    ...SYSTEM_DIRS,
  ]
  for (const dir of dirs) {
    const path = join(dir, name)
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch {
      // Try the next folder.
    }
  }
  return null
}

/** Whether this bwrap knows an option (`--disable-userns` came with 0.8.0). */
export async function bwrapKnows(bwrap: string, option: string): Promise<boolean> {
  try {
    const { stdout, stderr } = await run(bwrap, ['--help'])
    return `${stdout}${stderr}`.includes(option)
  } catch {
    return false
  }
}

/** The sentence `describe()` shows when the probe sandbox failed, with what to do about it. */
export function explainProbeFailure(mode: 'bwrap' | 'rlimits', error: string): string {
  const hint =
    mode === 'rlimits'
      ? 'check that util-linux (setpriv, prlimit) is installed'
      : /uid map|namespace|Operation not permitted|Permission denied/i.test(error)
        ? 'unprivileged user namespaces look disabled (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces > 0; on Ubuntu 24.04 an AppArmor profile for bwrap), or set PGSCHED_SANDBOX=rlimits'
        : 'or set PGSCHED_SANDBOX=rlimits'
  return `${mode} cannot start a job here (${error}); ${hint}`
}
