/**
 * @module The unprivileged user command jobs run as: PGSCHED_JOB_USER, or a dedicated system user
 * `pgsched-job` that a root worker creates, or the worker's own user when it is not root.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** The user created for jobs when PGSCHED_JOB_USER is not set and the worker runs as root. */
export const JOB_USER_DEFAULT = 'pgsched-job'

/** Who a job runs as on the host. */
export interface JobUser {
  name: string
  uid: number
  gid: number
  /** Whether the worker must switch to this user (it is root); false: the job keeps the worker's uid. */
  switchUser: boolean
}

/** Finds, or creates when it is the default, the user jobs run as; throws with what to do. */
export async function resolveJobUser(jobUser: string | undefined): Promise<JobUser> {
  const uid = process.getuid?.() ?? -1
  if (uid !== 0) {
    const self = await lookup(String(uid))
    if (jobUser !== undefined && jobUser !== self?.name && jobUser !== String(uid)) {
      throw new Error(
        `PGSCHED_JOB_USER=${jobUser} needs the worker to run as root (it runs as uid ${uid}); unset it to run jobs as the worker's own user`,
      )
    }
    return {
      name: self?.name ?? String(uid),
      uid,
      gid: process.getgid?.() ?? uid,
      switchUser: false,
    }
  }
  const name = jobUser ?? JOB_USER_DEFAULT
  let found = await lookup(name)
  if (found === null && jobUser === undefined) {
    await createSystemUser(name)
    found = await lookup(name)
  }
  if (found === null) {
    if (/^\d+$/.test(name)) return checked({ name, uid: Number(name), gid: Number(name) })
    throw new Error(`PGSCHED_JOB_USER=${name}: no such user; create it or unset PGSCHED_JOB_USER`)
  }
  return checked(found)
}

function checked(u: Omit<JobUser, 'switchUser'>): JobUser {
  if (u.uid === 0 || u.gid === 0) {
    throw new Error(
      `the job user ${u.name} has uid or gid 0; jobs never run as root, set PGSCHED_JOB_USER to an unprivileged user`,
    )
  }
  return { ...u, switchUser: true }
}

async function lookup(nameOrUid: string): Promise<Omit<JobUser, 'switchUser'> | null> {
  try {
    const { stdout } = await run('getent', ['passwd', nameOrUid])
    const [name, , uid, gid] = stdout.trim().split(':')
    if (name === undefined || uid === undefined || gid === undefined) return null
    return { name, uid: Number(uid), gid: Number(gid) }
  } catch {
    // getent exits 2 for an unknown key.
    return null
  }
}

async function createSystemUser(name: string): Promise<void> {
  const attempts: [string, string[]][] = [
    [
      'useradd',
      [
        '--system',
        '--user-group',
        '--no-create-home',
        '--home-dir',
        '/nonexistent',
        '--shell',
        '/usr/sbin/nologin',
        '--comment',
        'pgsched command jobs',
        name,
      ],
    ],
    ['adduser', ['--system', '--group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]],
  ]
  const failures: string[] = []
  for (const [file, args] of attempts) {
    try {
      await run(file, args)
      return
    } catch (e) {
      // Another worker on this host may have created it a moment ago.
      if ((await lookup(name)) !== null) return
      failures.push(`${file}: ${(e as Error).message.split('\n')[0]}`)
    }
  }
  throw new Error(
    `could not create the job user ${name} (${failures.join('; ')}); create an unprivileged user and set PGSCHED_JOB_USER`,
  )
}
