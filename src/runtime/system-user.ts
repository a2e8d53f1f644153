/**
 * @module System users that pgsched, running as root, runs things as: `postgres` for the embedded
 * server (Postgres refuses root) and `pgsched-job` for command jobs. Found with getent, created
 * (no home, no login) with whichever of useradd or adduser the system has.
 */
import { execFileSync } from 'node:child_process'

/** A user of this host and its primary group. */
interface SystemUser {
  name: string
  uid: number
  gid: number
}

/** The user with this name (or uid), or null when there is none. */
export function findSystemUser(nameOrUid: string): SystemUser | null {
  try {
    const line = execFileSync('getent', ['passwd', nameOrUid], { encoding: 'utf8', stdio: 'pipe' })
    const [name, , uid, gid] = line.trim().split(':')
    if (name === undefined || uid === undefined || gid === undefined) return null
    return { name, uid: Number(uid), gid: Number(gid) }
  } catch {
    // getent exits 2 for an unknown key.
    return null
  }
}

/**
 * The system user `name`, created when missing. Throws, saying what each way of creating it
 * answered, when none worked.
 */
export function ensureSystemUser(name: string, comment: string): SystemUser {
  const existing = findSystemUser(name)
  if (existing) return existing
  const nologin = ['--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin']
  const attempts: [string, string[]][] = [
    ['useradd', ['--system', '--user-group', ...nologin, '--comment', comment, name]],
    // A group of that name exists already.
    ['useradd', ['--system', '--gid', name, ...nologin, '--comment', comment, name]],
    // Debian's adduser, then BusyBox's.
    ['adduser', ['--system', '--group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]],
    ['adduser', ['-S', '-D', '-H', name]],
  ]
  const failures: string[] = []
  for (const [file, args] of attempts) {
    try {
      execFileSync(file, args, { stdio: 'pipe' })
    } catch (e) {
      failures.push(`${file}: ${(e as Error).message.split('\n')[0]}`)
    }
    // Created now, or a moment ago by another process of this host.
    const created = findSystemUser(name)
    if (created) return created
  }
  throw new Error(`could not create the system user ${name} (${failures.join('; ')})`)
}
