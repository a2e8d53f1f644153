/**
 * @module
 * `npm run chaos -- <drill>|all [--quick]`: stands up one stack (etcd, two Patroni nodes, HAProxy,
 * pgBackRest, pgsched), runs the chosen drills on it in order (the restore drill last: it destroys
 * the cluster), writes `chaos/REPORT.md`, `chaos/report.json` and a timeline SVG per drill, and
 * exits 1 if any invariant broke. Every process it started is stopped, also on failure or Ctrl-C.
 */
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import type { Drill, DrillContext } from './drills/drill.ts'
import { leaderKill } from './drills/leader-kill.ts'
import { leaderPartition } from './drills/leader-partition.ts'
import { postgresRestart } from './drills/postgres-restart.ts'
import { primaryKill } from './drills/primary-kill.ts'
import { restore } from './drills/restore.ts'
import { switchover } from './drills/switchover.ts'
import { workerKill } from './drills/worker-kill.ts'
import { workerPartition } from './drills/worker-partition.ts'
import { startStack } from './infra/stack.ts'
import { Supervisor, say } from './infra/supervisor.ts'
import { writeReport } from './observe/report.ts'
import type { DrillResult } from './observe/types.ts'

/** Every drill, in the order `all` runs them (restore last). */
export const DRILLS: Drill[] = [
  { number: 1, name: 'worker-kill', run: workerKill },
  { number: 2, name: 'leader-kill', run: leaderKill },
  { number: 3, name: 'primary-kill', run: primaryKill },
  { number: 4, name: 'switchover', run: switchover },
  { number: 5, name: 'worker-partition', run: workerPartition },
  { number: 6, name: 'leader-partition', run: leaderPartition },
  { number: 7, name: 'postgres-restart', run: postgresRestart },
  { number: 8, name: 'restore', run: restore },
]

const USAGE = `usage: npm run chaos -- <drill>|all [--quick] [--out FOLDER]

drills: ${DRILLS.map((d) => `${d.number} ${d.name}`).join(', ')} (by name or number, comma-separated)
--quick  each drill shortened (the whole under 10 minutes on 2 cores)
--out    where the report goes (default chaos/, beside this file)
Run as root on Linux with etcd-server, patroni, haproxy, pgbackrest, nftables and PostgreSQL 15.`

/** Parses the arguments; null when they ask for help or are wrong. */
export function parseArgs(
  argv: string[],
): { drills: Drill[]; quick: boolean; out: string | undefined } | null {
  const quick = argv.includes('--quick')
  const at = argv.indexOf('--out')
  const out = at >= 0 ? argv[at + 1] : undefined
  if (at >= 0 && (!out || out.startsWith('--'))) return null
  const rest = argv.filter((a, i) => a !== '--quick' && (at < 0 || (i !== at && i !== at + 1)))
  if (rest.length !== 1 || rest[0] === '--help' || rest[0] === '-h') return null
  const wanted = rest[0]!.split(',')
  if (wanted.includes('all')) return { drills: DRILLS, quick, out }
  const drills: Drill[] = []
  for (const w of wanted) {
    const d = DRILLS.find((x) => x.name === w || String(x.number) === w)
    if (!d) return null
    drills.push(d)
  }
  // The restore drill destroys the cluster: always last.
  drills.sort((x, y) => (x.name === 'restore' ? 1 : 0) - (y.name === 'restore' ? 1 : 0))
  return { drills, quick, out }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2))
  if (!args) {
    console.error(USAGE)
    return 2
  }
  if (process.getuid?.() !== 0) {
    console.error(
      '[chaos] run as root: Postgres runs as the postgres user and partitions need network namespaces',
    )
    return 2
  }
  const t0 = Date.now()
  const sv = new Supervisor()
  sv.installHandlers()
  say(
    `run folder ${sv.folder} (logs in logs/); drills: ${args.drills.map((d) => d.name).join(', ')}${args.quick ? ' (quick)' : ''}`,
  )
  const results: DrillResult[] = []
  try {
    const stack = await startStack(sv)
    say('stack up')
    const ctx: DrillContext = { stack, quick: args.quick }
    for (const d of args.drills) {
      say(`drill ${d.number} ${d.name}: start`)
      results.push(await d.run(ctx))
    }
  } catch (e) {
    say(`stopped by an error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`)
    results.push({
      drill: 'stack',
      number: 0,
      fault: 'none: the stack or a drill failed outside its frame',
      windows: { faultStart: 0, recovered: 0 },
      checks: { passed: false, checks: [], figures: noFigures(), timeline: emptyTimeline() },
      error: e instanceof Error ? e.message : String(e),
    })
  } finally {
    say('stopping every process')
    await sv.stopAll()
  }
  const folder = args.out ? `${resolve(args.out)}/` : fileURLToPath(new URL('.', import.meta.url))
  const outcome = writeReport(results, folder, {
    command: `npm run chaos -- ${process.argv.slice(2).join(' ')}`,
    quick: args.quick,
    notes: [
      'Every process ran on this machine as a local process (no Docker, no testcontainers): etcd, two Patroni nodes over PostgreSQL 15, HAProxy, pgBackRest, and pgsched (api, schedulers a and b, workers w1 and w2; b and w2 each in a network namespace).',
    ],
  })
  for (const f of outcome.failures) say(`FAILED: ${f}`)
  const failed = results.filter((r) => !r.checks.passed || r.error)
  say(
    `${results.length - failed.length}/${results.length} drills passed in ${((Date.now() - t0) / 1000).toFixed(0)} s; report in ${folder}REPORT.md; logs in ${sv.folder}/logs`,
  )
  return failed.length || !outcome.passed ? 1 : 0
}

function noFigures(): DrillResult['checks']['figures'] {
  return {
    rtoSubmissionsMs: null,
    rtoSchedulerMs: null,
    rtoExecutionMs: null,
    rpoJobsLost: 0,
    duplicates: 0,
    slowestAnswerDownMs: null,
    acknowledged: 0,
    refused: 0,
    ticksMissed: 0,
  }
}

function emptyTimeline(): DrillResult['checks']['timeline'] {
  return {
    start: 0,
    end: 0,
    cronJobId: null,
    cronCreatedAt: null,
    seconds: [],
    marks: [],
    refusals: [],
    workerDeaths: [],
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('chaos/run.ts')) {
  process.exitCode = await main()
}
