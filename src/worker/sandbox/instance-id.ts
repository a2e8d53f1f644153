/**
 * @module Names for the folders and cgroups one sandbox owns, so that a later worker can tell
 * the leftovers of a dead one (SIGKILLed, or its machine reset) from those of a live one.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'

// w<pid>-<start time in clock ticks since boot>-<random>: the pid alone could be reused.
const INSTANCE_ID = /^w(\d+)-(\d+)-[0-9a-f]+$/

/** A fresh name for one sandbox of this process. */
export function newInstanceId(): string {
  return `w${process.pid}-${startTime(process.pid)}-${randomBytes(4).toString('hex')}`
}

/** Whether `name` was made by newInstanceId in a process that no longer exists. */
export function isStaleInstance(name: string): boolean {
  const m = INSTANCE_ID.exec(name)
  if (!m) return false
  return startTime(Number(m[1])) !== m[2]
}

/** A fresh, unguessable name for one attempt. */
export function newAttemptId(): string {
  return randomBytes(12).toString('hex')
}

function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 22; the command name (field 2) may hold spaces and parentheses, so count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null
  } catch {
    return null
  }
}
