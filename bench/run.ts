/**
 * pgsched's benchmark: `npm run bench` (full, under 15 minutes on 2 cores) or
 * `npm run bench -- --quick` (under 3). Starts its own embedded PostgreSQL with default settings,
 * runs every workload on pgsched and on the baselines (raw Graphile Worker, pg-boss) in the same
 * run, and writes bench/RESULTS.md (with bench/findings.md, the hand-written analysis, appended)
 * and bench/results.json. `--only=submit,e2e,…` picks workloads; `--merge` (with --only) keeps the
 * other workloads' sections of results.json and replaces only those measured; `--render` rewrites
 * RESULTS.md from results.json.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'

import type { Ctx, Section, Workload } from './lib/context.ts'
import { TimeLimit } from './lib/measure.ts'
import { startBenchPostgres } from './lib/postgres.ts'
import { mergeResults, writeResults } from './lib/report.ts'
import { capacity } from './workloads/capacity.ts'
import { cronFanOut } from './workloads/cron.ts'
import { queueDepth } from './workloads/depth.ts'
import { endToEnd } from './workloads/e2e.ts'
import { historyDepth } from './workloads/history.ts'
import { pickupLatency } from './workloads/pickup.ts'
import { runtimes } from './workloads/runtimes.ts'
import { submitThroughput } from './workloads/submit.ts'
import { telemetryCost } from './workloads/telemetry.ts'

const WORKLOADS: [string, Workload][] = [
  ['submit', submitThroughput],
  ['e2e', endToEnd],
  ['telemetry', telemetryCost],
  ['pickup', pickupLatency],
  ['cron', cronFanOut],
  ['depth', queueDepth],
  ['history', historyDepth],
  ['capacity', capacity],
  ['runtimes', runtimes],
]

async function main(): Promise<void> {
  // --render: write RESULTS.md again from results.json (after editing findings.md), measuring nothing.
  if (process.argv.includes('--render')) {
    writeResults(JSON.parse(readFileSync('bench/results.json', 'utf8')))
    return
  }
  const quick = process.argv.includes('--quick')
  const only = process.argv
    .find((a) => a.startsWith('--only='))
    ?.slice(7)
    .split(',')
  const started = Date.now()
  const pg = await startBenchPostgres()
  const log = (msg: string) =>
    process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${msg}\n`)
  const ctx: Ctx = { quick, pg, log, scale: (full, q) => (quick ? q : full) }
  const sections: Section[] = []
  try {
    for (const [name, run] of WORKLOADS) {
      if (only && !only.includes(name)) continue
      log(`workload ${name}`)
      try {
        sections.push(await run(ctx))
      } catch (e) {
        // A workload slower than its time limits is reported as slow; the run goes on.
        if (!(e instanceof TimeLimit)) throw e
        log(`workload ${name}: ${e.message}; going on`)
        sections.push({
          id: name,
          title: `Workload ${name}: slow`,
          figures: [],
          notes: [
            'The workload stopped at that wait and its figures were not recorded; the run went on with the next workload.',
          ],
          slow: e.message,
        })
      }
    }
    const pkg = (name: string) =>
      JSON.parse(readFileSync(`node_modules/${name}/package.json`, 'utf8')).version as string
    const results = {
      quick,
      seconds: Math.round((Date.now() - started) / 1000),
      machine: {
        cpu: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
        memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
        kernel: execFileSync('uname', ['-sr']).toString().trim(),
        node: process.version,
      },
      versions: {
        pgsched: JSON.parse(readFileSync('package.json', 'utf8')).version,
        'graphile-worker': pkg('graphile-worker'),
        'pg-boss': pkg('pg-boss'),
        postgres: pkg('postgres'),
        autocannon: pkg('autocannon'),
      },
      postgres: await pg.settings(),
      sections,
    }
    writeResults(
      process.argv.includes('--merge')
        ? mergeResults(
            JSON.parse(readFileSync('bench/results.json', 'utf8')),
            results,
            WORKLOADS.map(([name]) => name),
          )
        : results,
    )
    log(
      `done: bench/RESULTS.md, bench/results.json (${Math.round((Date.now() - started) / 1000)} s)`,
    )
  } finally {
    await pg.stop()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
