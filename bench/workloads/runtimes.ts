/**
 * Workload runtimes: REST `POST /v1/jobs` on each runtime of the smoke table (Node's CLI, Deno,
 * Bun, workerd under `wrangler dev --local`), started the same way as there, each on a database of
 * its own: latency at 1 client, throughput at 16, the CPU per request of the runtime's processes
 * and of the whole machine, and the database sessions opened per request (workerd opens one per
 * request; the others keep a pool).
 */
import { readFileSync } from 'node:fs'

import { mintToken } from '../../src/api/tokens.ts'
import { createSql } from '../../src/db/client.ts'
import { freePort, type Service } from '../../test/processes.ts'
import { RUNTIMES } from '../../test/runtime/runtimes.ts'
import type { Ctx, Figure, Section, Workload } from '../lib/context.ts'
import { cpuWindow, percentile } from '../lib/measure.ts'
import { BENCH_SECRET } from '../lib/pgsched.ts'
import { restLoad } from './submit.ts'

const CLIENTS = 16

/**
 * What a request costs the database on a new connection (workerd's case without Hyperdrive):
 * connecting (fork, SCRAM, postgres.js' type fetch), then a first and a second submit_job in
 * that backend (the first compiles the PL/pgSQL functions and plans their statements). Medians.
 */
async function coldBackend(url: string, times: number) {
  const samples: [number, number, number][] = []
  for (let i = 0; i < times; i++) {
    const t0 = performance.now()
    const sql = createSql(url, { max: 1 })
    try {
      await sql`SELECT 1`
      const t1 = performance.now()
      await sql`SELECT pgsched.submit_job(name => 'cold', task => 'noop')`
      const t2 = performance.now()
      await sql`SELECT pgsched.submit_job(name => 'cold', task => 'noop')`
      samples.push([t1 - t0, t2 - t1, performance.now() - t2])
    } finally {
      await sql.end()
    }
  }
  const median = (k: 0 | 1 | 2) =>
    percentile(
      samples.map((x) => x[k]),
      50,
    )
  return { connect: median(0), first: median(1), second: median(2) }
}

/** Busy CPU-seconds of the whole machine so far (every core: user, system, irq, steal). */
function machineBusySeconds(): number {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/)
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number)
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100
}

export const runtimes: Workload = async (ctx: Ctx): Promise<Section> => {
  const seconds = ctx.scale(10, 3)
  const figures: Figure[] = []
  const notes: string[] = []
  const token = await mintToken(BENCH_SECRET, 'bench', ['submitter'], 3600)
  for (const [i, runtime] of RUNTIMES.entries()) {
    ctx.log(`runtimes: ${runtime.name}`)
    const url = await ctx.pg.createPgschedDatabase(`bench_runtimes_${i}`)
    const port = await freePort()
    const sql = createSql(url, { max: 1 })
    let services: Service[] = []
    const fig = (metric: string, value: number, unit: string) =>
      figures.push({ system: runtime.name, metric, value, unit })
    try {
      services = await runtime.start({
        DATABASE_URL: url,
        PGSCHED_JWT_SECRET: BENCH_SECRET,
        PGSCHED_HOST: '127.0.0.1',
        PORT: String(port),
        // The benchmark measures throughput, not protection from one user.
        PGSCHED_RATE_LIMIT_PER_MINUTE: '100000000',
      })
      const base = `http://127.0.0.1:${port}`
      await restLoad(base, token, 8, 1) // warm up: JIT, connections, plans
      const light = await restLoad(base, token, 1, seconds)
      fig('REST submit p50, 1 client', light.p50, 'ms')
      fig('REST submit p99, 1 client', light.p99, 'ms')
      const sessions = async () => {
        const [row] = await sql<{ n: number }[]>`
          SELECT sessions::int AS n FROM pg_stat_database WHERE datname = current_database()`
        return row!.n
      }
      const sessionsBefore = await sessions()
      const own = cpuWindow(() => services.map((s) => s.child.pid!))
      const machineBefore = machineBusySeconds()
      const heavy = await restLoad(base, token, CLIENTS, seconds)
      const [ownSeconds, machineSeconds] = [own.stop(), machineBusySeconds() - machineBefore]
      const opened = (await sessions()) - sessionsBefore
      fig(`REST submit, ${CLIENTS} clients`, heavy.perSecond, 'jobs/s')
      fig(`REST submit p99, ${CLIENTS} clients`, heavy.p99, 'ms')
      fig('CPU per request, the runtime', (ownSeconds / heavy.ok) * 1000, 'ms')
      fig('CPU per request, the whole machine', (machineSeconds / heavy.ok) * 1000, 'ms')
      fig('database sessions opened per request', opened / heavy.ok, 'sessions')
      if (heavy.failed > 0) notes.push(`${runtime.name}: ${heavy.failed} requests failed.`)
    } finally {
      for (const s of services) await s.stop()
      await sql.end()
    }
  }
  const times = ctx.scale(20, 5)
  const cold = await coldBackend(await ctx.pg.createPgschedDatabase('bench_runtimes_cold'), times)
  notes.push(
    `A new connection, as workerd opens per request without Hyperdrive (medians of ${times}, postgres.js from Node): connecting and a first \`SELECT 1\` ${cold.connect.toFixed(1)} ms; then a first \`submit_job\` ${cold.first.toFixed(1)} ms and a second ${cold.second.toFixed(1)} ms in the same backend.`,
  )
  notes.push(
    `Each runtime's API and scheduler started as in test/runtime/runtimes.ts (Node: the \`api\` and \`scheduler\` processes; workerd: \`wrangler dev --local\`, the API per request, no Hyperdrive), on a database of its own; autocannon in the benchmark process, ${seconds} s per load, body \`{"name":"bench","task":"noop"}\`. "The runtime" is its process tree (for workerd, wrangler's Node process and workerd); "the whole machine" adds Postgres, the load generator and everything else running, from /proc/stat. Sessions opened per request come from pg_stat_database.sessions.`,
  )
  return { id: 'runtimes', title: 'REST submit by runtime', figures, notes }
}
