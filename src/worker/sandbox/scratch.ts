/**
 * @module Scratch folders: one private, writable folder per attempt (the job's cwd and HOME),
 * under one folder per sandbox instance, removed after the attempt and, for instances whose
 * worker died, at the next worker's start.
 */
import { execFile } from 'node:child_process'
import { chmod, chown, lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Logger } from '../../core/types.ts'
import { isStaleInstance, newAttemptId } from './instance-id.ts'
import type { JobUser } from './job-user.ts'

const run = promisify(execFile)

/** Where scratch folders go unless the settings say otherwise. */
export function scratchRootDefault(): string {
  return join(tmpdir(), 'pgsched-jobs')
}

/** The folders of one sandbox instance. */
export class ScratchArea {
  /** `<root>/<instance id>`: the parent of every attempt folder of this instance. */
  readonly dir: string
  /** Files the sandbox shows the job as /etc/passwd and /etc/group. */
  readonly etcDir: string
  private readonly user: JobUser

  private constructor(dir: string, user: JobUser) {
    this.dir = dir
    this.etcDir = join(dir, 'etc')
    this.user = user
  }

  /**
   * Creates the root (checking that nobody else controls it) and this instance's folder.
   * Folders a job user only passes through are 0711: it can reach its own folder by name
   * but cannot list the others.
   */
  static async open(root: string, instanceId: string, user: JobUser): Promise<ScratchArea> {
    const mode = user.switchUser ? 0o711 : 0o700
    await mkdir(root, { recursive: true, mode })
    const st = await lstat(root)
    const uid = process.getuid?.() ?? 0
    if (!st.isDirectory() || st.uid !== uid) {
      throw new Error(
        `the scratch folder ${root} is not a folder owned by uid ${uid}; remove it or choose another scratch root`,
      )
    }
    // A folder others can write to would let them swap an attempt's folder for a symlink.
    await chmod(root, mode)
    const area = new ScratchArea(join(root, instanceId), user)
    await mkdir(area.dir, { mode })
    await chmod(area.dir, mode)
    await mkdir(area.etcDir, { mode: 0o755 })
    return area
  }

  /** Writes a file the job may read (/etc/passwd, …) into the instance's etc folder. */
  async writeEtc(name: string, text: string): Promise<string> {
    const path = join(this.etcDir, name)
    await writeFile(path, text, { mode: 0o644 })
    return path
  }

  /** Creates a fresh attempt folder, mode 0700, owned by the job user. */
  async create(): Promise<string> {
    const path = join(this.dir, newAttemptId())
    await mkdir(path, { mode: 0o700 })
    if (this.user.switchUser) await chown(path, this.user.uid, this.user.gid)
    return path
  }

  /**
   * Removes an attempt folder. With `asJobUser`, the contents go first as the job user: a
   * process of the job that is still alive could otherwise swap a folder for a symlink and have
   * root delete what it points to.
   */
  async remove(path: string, asJobUser: boolean): Promise<void> {
    if (asJobUser && this.user.switchUser) {
      await run('setpriv', [
        `--reuid=${this.user.uid}`,
        `--regid=${this.user.gid}`,
        '--clear-groups',
        '--',
        'find',
        path,
        '-mindepth',
        '1',
        '-delete',
      ]).catch(() => {})
    }
    await rm(path, { recursive: true, force: true })
  }

  /** Removes the instance folder with whatever is left in it. */
  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true })
  }
}

/** Removes the instance folders of workers that no longer run; returns how many. */
export async function removeStaleScratch(root: string, logger: Logger): Promise<number> {
  let names: string[]
  try {
    names = await readdir(root)
  } catch {
    return 0
  }
  let removed = 0
  for (const name of names.filter(isStaleInstance)) {
    try {
      await rm(join(root, name), { recursive: true, force: true })
      removed++
    } catch (e) {
      logger.warn({ err: e, folder: join(root, name) }, 'could not remove a dead worker’s scratch')
    }
  }
  return removed
}
