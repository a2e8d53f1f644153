/**
 * @module The unprivileged user command jobs run as: PGSCHED_JOB_USER, or a dedicated system user
 * `pgsched-job` that a root worker creates, or the worker's own user when it is not root.
 */
import { ensureSystemUser, findSystemUser } from '../../runtime/system-user.ts'

/** The user created for jobs when PGSCHED_JOB_USER is not set and the worker runs as root. */
const JOB_USER_DEFAULT = 'pgsched-job'

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
    const self = findSystemUser(String(uid))
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
  const found = jobUser === undefined ? createdJobUser(name) : findSystemUser(name)
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

function createdJobUser(name: string) {
  try {
    return ensureSystemUser(name, 'pgsched command jobs')
  } catch (e) {
    throw new Error(
      `${(e as Error).message}; create an unprivileged user and set PGSCHED_JOB_USER`,
      { cause: e },
    )
  }
}
