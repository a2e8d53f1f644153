/**
 * Workload 2, end-to-end throughput: a queue of N no-op runs, queued in bulk beforehand, drained by
 * one worker process at concurrency 10 and 25; runs/s from the worker being ready until the last
 * run has finished. pgsched drains no-op tasks and `true` shell commands; the baselines drain
 * no-op jobs: raw Graphile Worker with default settings (concurrency 10 and 25) and pg-boss
 * (concurrency 10). Every worker is a child process of the benchmark, started the same way.
 *
 * Also exports startGraphileWorker, which the pickup workload uses for its baseline.
 */
import { runMigrations } from 'graphile-worker'
import { PgBoss } from 'pg-boss'

import { createSql, type SqlPool } from '../../src/db/client.ts'
import { NODE, type Service, startService } from '../../test/processes.ts'
import type { Ctx, Figure, Workload } from '../lib/context.ts'
import { cpuWindow, rssMiB, since, slowNote, within } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { seedQueuedRuns, startPgschedProcess } from '../lib/pgsched.ts'
import { spawnFloor } from '../lib/spawn.ts'

const CONCURRENCIES = [10, 25] as const
/** The command drains, in this order, right after the spawn floor: [PGSCHED_SANDBOX, concurrency]. */
const COMMAND_DRAINS = [
  ['none', 10],
  ['rlimits', 10],
  ['bwrap', 10],
  ['bwrap', 25],
] as const
type Sandbox = (typeof COMMAND_DRAINS)[number][0]
const COMMAND_METRIC: Record<string, string> = {
  'none 10': METRIC.drainCommand10None,
  'rlimits 10': METRIC.drainCommand10Rlimits,
  'bwrap 10': METRIC.drainCommand10,
  'bwrap 25': METRIC.drainCommand25,
}
/** How often the benchmark counts what is left: the rate's resolution, same for every system. */
const POLL_MS = 50
/** Jobs per bulk-insert statement when building a baseline's backlog. */
const CHUNK = 10_000
/** pg-boss fetches this many jobs per query and runs them at once: its concurrency 10. */
const PGBOSS_BATCH = 10

const DRAIN_METRIC = { 10: METRIC.drainTask10, 25: METRIC.drainTask25 } as const

/** What the worker child processes print once they are up. */
const READY = 'bench worker ready'

/**
 * A raw Graphile Worker runner with one task, `noop`, as its own process: Graphile's defaults
 * (no local queue, no batched completions, 2 s fallback poll, LISTEN/NOTIFY), concurrency `c`
 * and a pool of c + 2 connections as pgsched's worker has. With BENCH_RECORD_PICKUP, the task
 * notes when it started relative to its job's created_at, by payload `group`, and prints that on
 * SIGTERM as one line: `pickups {"group": [ms, …]}`.
 */
const GRAPHILE_WORKER = `
import { Logger, run } from 'graphile-worker'
const concurrency = Number(process.env.BENCH_CONCURRENCY)
const pickups = {}
const record = process.env.BENCH_RECORD_PICKUP === '1'
const runner = await run({
  connectionString: process.env.DATABASE_URL,
  concurrency,
  maxPoolSize: concurrency + 2,
  noHandleSignals: true,
  logger: new Logger(() => (level, message) => {
    if (level === 'error' || level === 'warning') console.error(message)
  }),
  taskList: {
    noop: record
      ? async (payload, helpers) => {
          const ms = Date.now() - helpers.job.created_at.getTime()
          ;(pickups[payload.group] ??= []).push(ms)
        }
      : async () => {},
  },
})
process.on('SIGTERM', async () => {
  await runner.stop()
  process.stdout.write('pickups ' + JSON.stringify(pickups) + '\\n', () => process.exit(0))
})
console.log('${READY}')
`

/**
 * A pg-boss worker for queue `noop` as its own process. With batchSize 1, each of pg-boss's fetch
 * loops sleeps its polling interval (2 s) after every job unless burst mode is on, and its
 * ready-count trigger lags a 60 s stats cache; fetching 10 at a time with burstWhenBatchFull keeps
 * 10 jobs in flight and fetches again at once while batches come back full.
 */
const PGBOSS_WORKER = `
import { PgBoss } from 'pg-boss'
const boss = new PgBoss(process.env.DATABASE_URL)
boss.on('error', (e) => console.error(e))
await boss.start()
const batchSize = Number(process.env.BENCH_CONCURRENCY)
await boss.work('noop', { batchSize, burstWhenBatchFull: true }, async (jobs) => {
  await Promise.all(jobs.map(async () => {}))
})
process.on('SIGTERM', async () => {
  await boss.stop()
  process.exit(0)
})
console.log('${READY}')
`

/** Runs inline ESM `code` with the project's Node 24 as a child process; resolves once it is up. */
function startScript(code: string, env: Record<string, string>): Promise<Service> {
  return startService(NODE, ['--input-type=module', '-e', code], env, READY)
}

/**
 * Starts a raw Graphile Worker process on `url` at concurrency `c`. With `recordPickup`, call
 * pickups() after stop(): the recorded delays (ms), by the jobs' payload `group`.
 */
export async function startGraphileWorker(
  url: string,
  c: number,
  recordPickup = false,
): Promise<Service & { pickups(): Record<string, number[]> }> {
  const service = await startScript(GRAPHILE_WORKER, {
    DATABASE_URL: url,
    BENCH_CONCURRENCY: String(c),
    BENCH_RECORD_PICKUP: recordPickup ? '1' : '0',
  })
  // Its own copy of stdout: the service's logs mix in stderr.
  let stdout = ''
  service.child.stdout!.on('data', (d) => (stdout += d))
  return {
    ...service,
    pickups() {
      const line = stdout.split('\n').find((l) => l.startsWith('pickups '))
      if (!line) throw new Error(`graphile-worker printed no pickups; output:\n${service.logs()}`)
      return JSON.parse(line.slice('pickups '.length))
    },
  }
}

/** A fresh database with Graphile Worker's schema and nothing else. */
export async function createGraphileDatabase(ctx: Ctx, name: string): Promise<string> {
  const url = await ctx.pg.createDatabase(name)
  await runMigrations({ connectionString: url })
  return url
}

/** One number from one row. */
async function count(sql: SqlPool, query: string): Promise<number> {
  const [row] = await sql.unsafe<{ n: number }[]>(query)
  return Number(row!.n)
}

interface Drained {
  /** Runs done in the window: all of them, or what a slow drain reached. */
  runs: number
  perSecond: number
  /** Set when the queue was not empty at the time limit: the limit and what was reached. */
  slow?: string
}

const int = (v: number) => Math.round(v).toLocaleString('en-US')

/**
 * Polls `remainingQuery` every POLL_MS until it counts 0. The window opens at the first count
 * (taken right after the worker said it is ready; anything it finished before is not counted)
 * and closes at the first count of 0. Past `timeoutMs` the drain is slow: its rate is the runs
 * done ÷ the time taken, and `slow` says so; the run goes on.
 */
async function drain(sql: SqlPool, remainingQuery: string, timeoutMs: number): Promise<Drained> {
  const t0 = performance.now()
  const counted = await count(sql, remainingQuery)
  let left = counted
  const finished = await within(
    async () => {
      left = await count(sql, remainingQuery)
      return left === 0
    },
    timeoutMs,
    POLL_MS,
  )
  const seconds = since(t0) / 1000
  const runs = counted - left
  return {
    runs,
    perSecond: runs / seconds,
    ...(finished
      ? {}
      : {
          slow: `${slowNote(timeoutMs)}: ${int(runs)} of ${int(counted)} runs in ${seconds.toFixed(0)} s`,
        }),
  }
}

/**
 * Generous, so that only a machine many times slower than this one reaches it, and then the
 * drain is reported as slow rather than failing the run: 50 runs/s for tasks, 5 for commands
 * (a bwrap command costs tens of milliseconds of kernel time; 2 cores manage about 100 a second).
 */
const drainTimeoutMs = (n: number, floorPerSecond = 50) =>
  Math.max(60_000, (n / floorPerSecond) * 1000)

interface PgschedDrain extends Drained {
  /** CPU-seconds of the worker's process tree and all of Postgres over the window. */
  cpuSeconds: number
  rssMiB: number
}

async function drainPgsched(
  ctx: Ctx,
  n: number,
  kind: 'task' | 'command',
  c: number,
  sandbox: Sandbox = 'bwrap',
): Promise<PgschedDrain> {
  const url = await ctx.pg.createPgschedDatabase(
    `bench_e2e_pgsched_${kind}_${c}${kind === 'command' ? `_${sandbox}` : ''}`,
  )
  const sql = createSql(url, { max: 1 })
  try {
    await seedQueuedRuns(sql, n, kind)
    // The postmaster is among them: its process tree holds every backend, the worker's included.
    const pgPids = await ctx.pg.pids()
    const worker = await startPgschedProcess('worker', url, {
      PGSCHED_WORKER_CONCURRENCY: String(c),
      PGSCHED_SANDBOX: sandbox,
    })
    try {
      const cpu = cpuWindow(() => [worker.child.pid!, ...pgPids])
      const d = await drain(
        sql,
        `SELECT count(*) AS n FROM pgsched.runs WHERE status IN ('waiting', 'queued', 'running', 'failed')`,
        drainTimeoutMs(n, kind === 'command' ? 5 : 50),
      )
      const result = { ...d, cpuSeconds: cpu.stop(), rssMiB: rssMiB(worker.child.pid!) }
      const succeeded = await count(
        sql,
        `SELECT count(*) AS n FROM pgsched.runs WHERE status = 'succeeded'`,
      )
      // A slow drain stopped short; what it did finish must still have succeeded.
      if (d.slow ? succeeded < d.runs : succeeded !== n)
        throw new Error(`e2e: ${succeeded} of ${n} ${kind} runs succeeded (sandbox ${sandbox})`)
      return result
    } finally {
      await worker.stop()
    }
  } finally {
    await sql.end()
  }
}

async function drainGraphile(ctx: Ctx, n: number, c: number): Promise<Drained> {
  const url = await createGraphileDatabase(ctx, `bench_e2e_graphile_${c}`)
  const sql = createSql(url, { max: 1 })
  try {
    for (let done = 0; done < n; done += CHUNK) {
      await sql`SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
        SELECT ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
        FROM generate_series(1, ${Math.min(CHUNK, n - done)})))`
    }
    const worker = await startGraphileWorker(url, c)
    try {
      // Graphile Worker deletes a job once it has completed.
      return await drain(sql, 'SELECT count(*) AS n FROM graphile_worker.jobs', drainTimeoutMs(n))
    } finally {
      await worker.stop()
    }
  } finally {
    await sql.end()
  }
}

async function drainPgBoss(ctx: Ctx, n: number, c: number): Promise<Drained> {
  const url = await ctx.pg.createDatabase(`bench_e2e_pgboss_${c}`)
  // Installs pg-boss's schema and queue, and queues the backlog; then gets out of the way.
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false })
  boss.on('error', (e) => ctx.log(`e2e: pg-boss: ${e}`))
  await boss.start()
  try {
    await boss.createQueue('noop')
    for (let done = 0; done < n; done += CHUNK) {
      await boss.insert(
        'noop',
        Array.from({ length: Math.min(CHUNK, n - done) }, () => ({ data: {} })),
      )
    }
  } finally {
    await boss.stop({ graceful: false })
  }
  const sql = createSql(url, { max: 1 })
  try {
    const worker = await startScript(PGBOSS_WORKER, {
      DATABASE_URL: url,
      BENCH_CONCURRENCY: String(c),
    })
    try {
      return await drain(
        sql,
        `SELECT count(*) AS n FROM pgboss.job WHERE name = 'noop' AND state IN ('created', 'retry', 'active')`,
        drainTimeoutMs(n),
      )
    } finally {
      await worker.stop()
    }
  } finally {
    await sql.end()
  }
}

/** The priorities queued behind the busy slot, in order: issue 14's inversion scenario. */
const PRIORITY_SCENARIO = [10, 1, 10, 1] as const

/**
 * Issue 14's priority inversion, as a measurement: one worker at concurrency 1, its slot held by
 * a `sleep 1` command; meanwhile no-op runs of priority 10, 1, 10, 1 are submitted 200 ms apart
 * (time for a worker that claims ahead to claim each). Returns the order in which they started,
 * as indices into PRIORITY_SCENARIO: strict priority gives [1, 3, 0, 2].
 */
async function priorityOrder(ctx: Ctx): Promise<number[]> {
  const url = await ctx.pg.createPgschedDatabase('bench_e2e_priority')
  const sql = createSql(url, { max: 1 })
  const worker = await startPgschedProcess('worker', url, {
    PGSCHED_WORKER_CONCURRENCY: '1',
    PGSCHED_SANDBOX: 'none',
  })
  try {
    await sql`SELECT pgsched.submit_job(name => 'hold', command => 'sleep 1', priority => 5)`
    await within(
      async () =>
        (await count(sql, `SELECT count(*) AS n FROM pgsched.runs WHERE status = 'running'`)) === 1,
      10_000,
      POLL_MS,
    )
    for (const [i, priority] of PRIORITY_SCENARIO.entries()) {
      await sql`SELECT pgsched.submit_job(name => ${`urgency-${i}`}, task => 'noop', priority => ${priority})`
      await new Promise((r) => setTimeout(r, 200))
    }
    const all = `SELECT count(*) AS n FROM pgsched.runs WHERE status = 'succeeded'`
    if (!(await within(async () => (await count(sql, all)) === 5, 30_000, POLL_MS)))
      throw new Error('e2e: the priority scenario did not finish in 30 s')
    const rows = await sql<{ name: string }[]>`
      SELECT j.name FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
      WHERE j.name LIKE 'urgency-%' ORDER BY r.started_at, r.id`
    return rows.map((r) => Number(r.name.slice('urgency-'.length)))
  } finally {
    await worker.stop()
    await sql.end()
  }
}

/** A figure from a drain, carrying its slow mark. */
const drainFigure = (system: string, metric: string, d: Drained): Figure => ({
  system,
  metric,
  value: d.perSecond,
  unit: 'runs/s',
  ...(d.slow ? { slow: d.slow } : {}),
})

/** Workload 2. */
export const endToEnd: Workload = async (ctx) => {
  const n = ctx.scale(20_000, 3_000)
  // Sandboxed commands drain about a tenth as fast as tasks: fewer keep the window as long.
  const commands = ctx.scale(2_000, 300)
  const floorSeconds = ctx.scale(10, 5)
  const figures: Figure[] = []
  const notes: string[] = []
  let cpuPerJob = Number.NaN

  for (const c of CONCURRENCIES) {
    ctx.log(`e2e: pgsched, task, concurrency ${c}`)
    const d = await drainPgsched(ctx, n, 'task', c)
    figures.push(drainFigure(SYSTEMS.pgsched, DRAIN_METRIC[c], d))
    if (c === 10) cpuPerJob = d.cpuSeconds / d.runs
    if (c === 25) {
      figures.push({
        system: SYSTEMS.pgsched,
        metric: METRIC.workerRss25,
        value: d.rssMiB,
        unit: 'MiB',
      })
    }
  }

  // The machine's spawn floor, right before the command drains it bounds.
  ctx.log(`e2e: spawn floor, ${floorSeconds} s`)
  const floor = await spawnFloor(floorSeconds, 10)
  ctx.log(`e2e: spawn floor ${floor.perSecond.toFixed(0)} spawns/s`)
  figures.push({
    system: SYSTEMS.pgsched,
    metric: METRIC.spawnFloor10,
    value: floor.perSecond,
    unit: 'spawns/s',
  })
  const drains: Partial<Record<string, Drained>> = {}
  for (const [sandbox, c] of COMMAND_DRAINS) {
    ctx.log(`e2e: pgsched, command, sandbox ${sandbox}, concurrency ${c}`)
    const d = await drainPgsched(ctx, commands, 'command', c, sandbox)
    ctx.log(`e2e: ${d.perSecond.toFixed(0)} runs/s${d.slow ? ` (${d.slow})` : ''}`)
    drains[`${sandbox} ${c}`] = d
    figures.push(drainFigure(SYSTEMS.pgsched, COMMAND_METRIC[`${sandbox} ${c}`]!, d))
  }
  // Ratios and costs derived from the drains at concurrency 10; slow if any input was.
  const derived = (metric: string, value: number, unit: string, ...from: Drained[]) => {
    const slow = from.flatMap((d) => (d.slow ? [d.slow] : []))
    figures.push({
      system: SYSTEMS.pgsched,
      metric,
      value,
      unit,
      ...(slow.length ? { slow: slow.join('; ') } : {}),
    })
  }
  const none = drains['none 10']!
  const rlimits = drains['rlimits 10']!
  const bwrap = drains['bwrap 10']!
  derived(METRIC.commandFloorRatioNone, none.perSecond / floor.perSecond, '×', none)
  derived(METRIC.commandFloorRatioRlimits, rlimits.perSecond / floor.perSecond, '×', rlimits)
  derived(METRIC.commandFloorRatioBwrap, bwrap.perSecond / floor.perSecond, '×', bwrap)
  derived(METRIC.commandBwrapOverNone, bwrap.perSecond / none.perSecond, '×', bwrap, none)
  const costMs = (d: Drained) => 1000 / d.perSecond - 1000 / none.perSecond
  derived(METRIC.sandboxCostBwrap, costMs(bwrap), 'ms', bwrap, none)
  derived(METRIC.sandboxCostBwrapSlot, costMs(bwrap) * 10, 'ms', bwrap, none)
  derived(METRIC.sandboxCostRlimits, costMs(rlimits), 'ms', rlimits, none)

  for (const c of CONCURRENCIES) {
    ctx.log(`e2e: graphile-worker, concurrency ${c}`)
    figures.push(drainFigure(SYSTEMS.graphile, DRAIN_METRIC[c], await drainGraphile(ctx, n, c)))
  }
  // The drain ratios the issue asks for (strict priority must keep them ≥ 1).
  for (const c of CONCURRENCIES) {
    const mine = figures.find((f) => f.system === SYSTEMS.pgsched && f.metric === DRAIN_METRIC[c])!
    const theirs = figures.find(
      (f) => f.system === SYSTEMS.graphile && f.metric === DRAIN_METRIC[c],
    )!
    const slow = [mine.slow, theirs.slow].filter(Boolean).join('; ')
    figures.push({
      system: SYSTEMS.pgsched,
      metric: `drain no-op tasks ÷ raw Graphile Worker, concurrency ${c}`,
      value: mine.value / theirs.value,
      unit: '×',
      ...(slow ? { slow } : {}),
    })
  }
  ctx.log('e2e: priority order, concurrency 1, slot busy')
  const order = await priorityOrder(ctx)
  const strict = [...PRIORITY_SCENARIO.keys()].sort(
    (a, b) => PRIORITY_SCENARIO[a]! - PRIORITY_SCENARIO[b]! || a - b,
  )
  // Runs that started before a more urgent one queued earlier or at the same time as them.
  const inversions = order.filter((i, k) =>
    order.slice(k + 1).some((j) => PRIORITY_SCENARIO[j]! < PRIORITY_SCENARIO[i]!),
  ).length
  figures.push({
    system: SYSTEMS.pgsched,
    metric: 'priority: runs started ahead of a more urgent one (concurrency 1, slot busy)',
    value: inversions,
    unit: 'runs',
  })
  notes.push(
    `Priority (issue 14's inversion): one worker at concurrency 1, its slot held by a \`sleep 1\` command (sandbox none); meanwhile no-op runs of priority ${PRIORITY_SCENARIO.join(', ')} are submitted 200 ms apart. Start order (indices of that list): [${order.join(', ')}]; strict priority is [${strict.join(', ')}]. A worker that claims runs for busy slots starts the first priority-10 run before the priority-1 runs queued after it.`,
  )
  ctx.log(`e2e: pg-boss, concurrency ${PGBOSS_BATCH}`)
  figures.push(
    drainFigure(
      SYSTEMS.pgboss,
      DRAIN_METRIC[PGBOSS_BATCH],
      await drainPgBoss(ctx, n, PGBOSS_BATCH),
    ),
  )

  notes.push(
    `Each drain: a fresh database holding ${n.toLocaleString('en-US')} queued no-op runs, queued in bulk beforehand (pgsched: jobs, runs and executor jobs as submit_jobs leaves them; Graphile Worker: graphile_worker.add_jobs; pg-boss: insert; ${CHUNK.toLocaleString('en-US')} per statement), then one worker process. Timed from the worker printing that it is ready until a count (every ${POLL_MS} ms) finds nothing left to do; runs/s is what was left at the first count ÷ that time.`,
    "pgsched: `pgsched worker` with its defaults and PGSCHED_WORKER_CONCURRENCY; a task run calls the no-op handler in bench/tasks, a command run spawns `true` through the shell in the sandbox PGSCHED_SANDBOX names (see below and the README's Job isolation). Every run is checked to have succeeded. pgsched records each run's history (the run with its status and times, its attempt, its events), which raw Graphile Worker does not: it deletes a job when it completes.",
    "Raw Graphile Worker: `run()` with Graphile's defaults (no local queue, no batched completions), a no-op task, concurrency 10 or 25 and a pool of concurrency + 2 connections, as pgsched's worker has (Graphile warns when the pool is smaller than the concurrency).",
    `pg-boss: one \`work()\` with batchSize ${PGBOSS_BATCH} and burstWhenBatchFull, the handler running the ${PGBOSS_BATCH} jobs at once, other settings default. pg-boss's concurrency is jobs fetched per query × fetch loops; with batchSize 1 each loop waits its 2 s polling interval between jobs (about 5 jobs/s for 10 loops) unless burst mode is on, and its other burst trigger reads a stats cache refreshed every 60 s. Fetching and completing 10 jobs per statement favours pg-boss over raw Graphile Worker, which with its defaults fetches and completes one job at a time; pgsched's worker claims and completes in batches too (Graphile's local queue, patched to claim only for free slots, each claim starting its runs in the same statement).`,
    'CPU per job (cost section): CPU-seconds of the pgsched worker process (and its children) and of every Postgres process over the drain of no-op tasks at concurrency 10, ÷ the runs drained in that window. Worker RSS: the worker process at the end of the concurrency-25 drain of no-op tasks.',
  )
  notes.push(
    `Spawn floor: this benchmark's own Node process runs 10 loops, each spawning \`/bin/sh -c true\` (child_process.spawn, stdio ignored) as soon as its last one has exited, for ${floorSeconds} s, right before the command drains; spawns/s is every process that exited ÷ the time until the last loop finished. It is what starting a process costs on this machine (it varies a lot between machines of the same kind) and so the ceiling of a command drain at concurrency 10; each command drain is also given as a ratio to it.`,
    `Command drains: ${commands.toLocaleString('en-US')} queued \`true\` commands each, one worker with PGSCHED_SANDBOX=none (\`/bin/sh -c\` as the worker's user), rlimits (the job user, a cgroup and prlimit, no namespaces) or bwrap (the default: rlimits plus bwrap's namespaces), the worker running as root. Sandbox cost per command: 1000 ÷ the sandboxed drain's runs/s − 1000 ÷ the unsandboxed drain's runs/s, both at concurrency 10: the extra milliseconds of the machine's time per command (its 2 cores shared by the 10 slots, the worker and Postgres). Per slot: that × 10, how much longer each of the 10 slots is busy per command.`,
    `Time limits: a drain still unfinished after max(60 s, its runs ÷ 50 a second) for tasks, ÷ 5 a second for commands, is reported as slow (its rate is the runs done ÷ the time taken, marked "slow: did not finish in N s") and the run goes on.`,
  )
  return {
    id: 'e2e',
    title: 'End-to-end execution: draining a queue of no-op runs',
    figures,
    notes,
    cpuSecondsPerJob: { 'execute a no-op job': cpuPerJob },
  }
}
