/**
 * The chaos drills' own machinery, without the stack: the supervisor stops what it started (the
 * whole process group), a process that dies before it is ready fails at once, and the command
 * line picks drills with the restore drill last.
 */
import { readFileSync, rmSync } from 'node:fs'

import { afterEach, describe, expect, it } from 'vitest'

import { alive, Supervisor } from '../chaos/infra/supervisor.ts'
import { parseArgs } from '../chaos/run.ts'

const supervisors: Supervisor[] = []
afterEach(async () => {
  for (const sv of supervisors.splice(0)) {
    await sv.stopAll()
    rmSync(sv.folder, { recursive: true, force: true })
  }
})

function supervisor(): Supervisor {
  const sv = new Supervisor('pgsched-chaos-test')
  supervisors.push(sv)
  return sv
}

describe('Supervisor', () => {
  it('stops every process it started, children included, and runs the cleanups', async () => {
    const sv = supervisor()
    // A child that ignores SIGTERM: only the SIGKILL after the grace ends it.
    const p = await sv.start(
      'tree',
      'sh',
      [
        '-c',
        'sh -c \'trap "" TERM; echo $$ > child.pid; while :; do sleep 1; done\' & echo up; wait',
      ],
      { cwd: sv.folder, ready: 'up' },
    )
    const cleaned: string[] = []
    sv.onCleanup('first', () => void cleaned.push('first'))
    sv.onCleanup('second', () => void cleaned.push('second'))
    let child = 0
    for (let i = 0; i < 50 && !child; i++) {
      try {
        child = Number(readFileSync(`${sv.folder}/child.pid`, 'utf8'))
      } catch {
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    expect(alive(p.pid)).toBe(true)
    expect(alive(child)).toBe(true)
    await sv.stopAll()
    expect(alive(p.pid)).toBe(false)
    expect(alive(child)).toBe(false)
    expect(cleaned).toEqual(['second', 'first'])
    expect(sv.running()).toEqual([])
  })

  it('fails at once when a process exits before it is ready, with its log', async () => {
    const sv = supervisor()
    await expect(
      sv.start('quitter', 'sh', ['-c', 'echo bad config; exit 3'], { ready: 'listening' }),
    ).rejects.toThrow(/quitter exited \(3\) before it was ready:\nbad config/)
  })

  it('runs a process as the postgres user', async () => {
    const sv = supervisor()
    const p = await sv.start('whoami', 'id', ['-un'], { asPostgres: true })
    await p.exited
    expect(p.log().trim()).toBe('postgres')
  })
})

describe('chaos command line', () => {
  it('runs every drill for all, the restore drill last whatever the order asked', () => {
    expect(parseArgs(['all', '--quick'])?.drills.map((d) => d.number)).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8,
    ])
    expect(parseArgs(['all'])?.quick).toBe(false)
    expect(parseArgs(['restore,3,worker-kill'])?.drills.map((d) => d.name)).toEqual([
      'primary-kill',
      'worker-kill',
      'restore',
    ])
  })

  it('refuses an unknown drill and no drill at all', () => {
    expect(parseArgs(['nope'])).toBeNull()
    expect(parseArgs(['--quick'])).toBeNull()
    expect(parseArgs([])).toBeNull()
  })

  it('writes the report where --out says, else beside the code', () => {
    expect(parseArgs(['all', '--quick', '--out', '/tmp/r'])).toMatchObject({
      quick: true,
      out: '/tmp/r',
    })
    expect(parseArgs(['--out', '/tmp/r', '2'])?.drills.map((d) => d.name)).toEqual(['leader-kill'])
    expect(parseArgs(['2'])?.out).toBeUndefined()
    expect(parseArgs(['2', '--out'])).toBeNull()
  })
})
