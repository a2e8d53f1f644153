/**
 * @module A watchdog that empties a worker's job cgroups when the worker dies, even by SIGKILL.
 * bubblewrap's --die-with-parent (PDEATHSIG) ends a job with its worker, but not always: under
 * load the sandbox's init was seen to outlive a killed worker, reparented to PID 1, the job still
 * running. The watchdog is a small shell, in a session of its own, holding the read end of a pipe
 * whose write end only the worker holds: when the worker is gone the read ends, and it SIGKILLs
 * whatever is left in each attempt's cgroup. A job cannot signal it (it runs as the worker's user,
 * root, outside the jobs' namespaces). A worker that stops normally closes the pipe itself.
 */
import { type ChildProcess, spawn } from 'node:child_process'

// Waits for EOF on stdin, then kills every process of every attempt cgroup until none is left
// (a job may fork while it is being killed), for at most about 5 s.
const SCRIPT = `cat >/dev/null
i=0
while [ $i -lt 100 ]; do
  left=0
  for dir do
    for procs in "$dir"/*/cgroup.procs; do
      [ -f "$procs" ] || continue
      while read -r pid; do kill -9 "$pid" 2>/dev/null; left=1; done < "$procs"
    done
  done
  [ $left = 0 ] && exit 0
  i=$((i + 1))
  sleep 0.05
done`

/** A running watchdog; stop() lets it go (after one last sweep). */
export interface Watchdog {
  stop(): void
}

/** Starts the watchdog of the attempt cgroups under `instanceDirs`. */
export function startWatchdog(instanceDirs: readonly string[]): Watchdog {
  const child: ChildProcess = spawn(
    '/bin/sh',
    ['-c', SCRIPT, 'pgsched-watchdog', ...instanceDirs],
    {
      // Its own session: a signal to the worker's process group does not reach it.
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
    },
  )
  // Neither the child nor the pipe keeps the worker's event loop alive.
  child.unref()
  ;(child.stdin as unknown as { unref(): void }).unref()
  return { stop: () => child.stdin?.end() }
}
