/** @module The machine's spawn floor: how fast a bare Node loop starts and reaps processes. */
import { spawn } from 'node:child_process'

/** One `/bin/sh -c true`, resolved once it has exited. */
function spawnTrue(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'true'], { stdio: 'ignore' })
    child.once('error', reject)
    child.once('exit', () => resolve())
  })
}

/**
 * Spawns `/bin/sh -c true` from this process with `concurrency` loops, each starting the next as
 * soon as its last has exited, for `seconds`; spawns/s is every process that exited ÷ the time
 * until the last loop has finished. No database, no sandbox: what starting a process costs on
 * this machine, the ceiling of any command drain at that concurrency.
 */
export async function spawnFloor(
  seconds: number,
  concurrency = 10,
): Promise<{ spawns: number; seconds: number; perSecond: number }> {
  const t0 = performance.now()
  const deadline = t0 + seconds * 1000
  let spawns = 0
  const loop = async () => {
    while (performance.now() < deadline) {
      await spawnTrue()
      spawns++
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop))
  const elapsed = (performance.now() - t0) / 1000
  return { spawns, seconds: elapsed, perSecond: spawns / elapsed }
}
