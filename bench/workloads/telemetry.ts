/**
 * Workload 6, the cost of telemetry: the end-to-end drain of workload 2 (a queue of N no-op runs
 * queued in bulk, drained by one `pgsched worker` process at concurrency 10, measured after the
 * worker has drained warm-up runs: the steady cost), with telemetry off and on, in pairs in the
 * same run. Off: OTEL_SDK_DISABLED=true, no SDK, every instrument and span
 * a no-op. On: the SDK as a user gets it from the standard variables: metrics always (the
 * Prometheus reader in memory, scraped once at the end; pushed over OTLP as well), traces exported
 * over OTLP/HTTP protobuf to a receiver in the benchmark process, at the default sampling
 * (parent-based, always on). The receiver decodes every span it is sent, so the figures come with
 * proof that tracing was on: the spans per run, and a CONSUMER span for every run.
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

import { createSql, type SqlPool } from '../../src/db/client.ts'
import { decodeTraces, KIND, type ReceivedSpan } from '../../test/otlp-receiver.ts'
import type { Service } from '../../test/processes.ts'
import type { Ctx, Figure, Workload } from '../lib/context.ts'
import { cpuWindow, since, TimeLimit, until, within } from '../lib/measure.ts'
import { METRIC, SYSTEMS } from '../lib/metrics.ts'
import { seedQueuedRuns, startPgschedProcess } from '../lib/pgsched.ts'

const CONCURRENCY = 10
/** Runs each worker drains before the measured ones (see drainOnce). */
const WARMUP: Record<'task' | 'command', number> = { task: 3_000, command: 20 }
/** How often the benchmark counts what is left, as in workload 2. */
const POLL_MS = 50
const REMAINING = `SELECT count(*) AS n FROM pgsched.runs WHERE status IN ('waiting', 'queued', 'running', 'failed')`

type Mode = 'off' | 'on'
type Kind = 'task' | 'command'

/** An OTLP/HTTP receiver that keeps what it is sent; see startBufferingReceiver. */
interface Receiver {
  endpoint: string
  /** Decodes and forgets the trace exports received so far. */
  take(): ReceivedSpan[]
  /** Metric exports (POST /v1/metrics) received so far. */
  metricPosts: number
  close(): Promise<void>
}

/**
 * An OTLP/HTTP (protobuf) receiver on loopback that keeps the bodies of trace exports and decodes
 * them (test/otlp-receiver.ts's decodeTraces) only when asked, after a drain. test/otlp-receiver.ts's
 * startOtlpReceiver decodes each export as it arrives: in the benchmark process, during the window,
 * that took about 0.1 CPU-ms per run from the 2 cores the drain runs on, as much as tracing costs
 * the worker, and would have been counted as pgsched's cost.
 */
async function startBufferingReceiver(): Promise<Receiver> {
  const bodies: Buffer[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        if (req.headers['content-type'] !== 'application/x-protobuf') {
          res.writeHead(415).end()
          return
        }
        bodies.push(Buffer.concat(chunks))
      } else if (req.url === '/v1/metrics') receiver.metricPosts++
      // An empty Export…ServiceResponse: full success.
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const receiver: Receiver = {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    take: () => bodies.splice(0).flatMap((b) => decodeTraces(b)),
    metricPosts: 0,
    close: () => new Promise((r) => server.close(() => r())),
  }
  return receiver
}

/** What one drain measured. */
interface Drain {
  mode: Mode
  perSecond: number
  /** Runs left at the first count: the ones the window measured. */
  runs: number
  /** CPU-milliseconds per run of the worker process and of Postgres over the window. */
  workerCpuMs: number
  postgresCpuMs: number
  /**
   * CPU used over the window by everything else on the machine (other users' processes), in
   * cores: the machine's busy time less the worker's, Postgres' and the benchmark's own.
   */
  otherCores: number
  /** OTLP metric exports the receiver got from this worker. */
  metricPosts: number
  /** Spans the receiver got from this worker, by `name (kind)`. */
  spans: Map<string, number>
  spanCount: number
  /** Runs that have a CONSUMER span (by pgsched.run_id or messaging.message.id). */
  consumerRuns: number
  /** From the worker's GET /metrics at the end: sample lines of pgsched's own metrics. */
  metricSeries: number | undefined
  /** The sum of pgsched_runs_finished_total's series in that scrape. */
  runsFinishedMetric: number | undefined
}

/**
 * The worker's telemetry settings. Set in full, so that OTEL_* variables of the benchmark's own
 * environment (which the child inherits) do not change what is measured.
 */
function telemetryEnv(mode: Mode, endpoint: string): Record<string, string> {
  if (mode === 'off') return { OTEL_SDK_DISABLED: 'true' }
  return {
    OTEL_SDK_DISABLED: 'false',
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_TRACES_EXPORTER: 'otlp',
    // The SDK's default, spelled out.
    OTEL_TRACES_SAMPLER: 'parentbased_always_on',
  }
}

/** CPU-seconds the whole machine has spent busy since boot (/proc/stat: all but idle and iowait). */
function machineBusySeconds(): number {
  const [, user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
    .split('\n')[0]!
    .split(/\s+/)
    .map(Number)
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100
}

/** CPU-seconds of this (the benchmark's) process so far. */
function ownCpuSeconds(): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1e6
}

async function remaining(sql: SqlPool): Promise<number> {
  const [row] = await sql.unsafe<{ n: number }[]>(REMAINING)
  return Number(row!.n)
}

/** GET /metrics of the worker (the URL it printed), reduced to what proves metrics were on. */
async function scrapeMetrics(
  worker: Service,
): Promise<Pick<Drain, 'metricSeries' | 'runsFinishedMetric'>> {
  const url = /pgsched: metrics on (\S+)/.exec(worker.logs())?.[1]
  if (!url) return { metricSeries: undefined, runsFinishedMetric: undefined }
  const text = await (await fetch(url)).text()
  const samples = text.split('\n').filter((l) => l.startsWith('pgsched_'))
  const finished = samples.filter((l) => l.startsWith('pgsched_runs_finished_total'))
  return {
    metricSeries: samples.length,
    runsFinishedMetric: finished.length
      ? finished.reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
      : undefined,
  }
}

function summarizeSpans(
  spans: ReceivedSpan[],
): Pick<Drain, 'spans' | 'spanCount' | 'consumerRuns'> {
  const byName = new Map<string, number>()
  const consumerRuns = new Set<string>()
  const kindName = Object.fromEntries(Object.entries(KIND).map(([k, v]) => [v, k]))
  for (const s of spans) {
    const key = `${s.name} (${kindName[s.kind] ?? s.kind})`
    byName.set(key, (byName.get(key) ?? 0) + 1)
    if (s.kind === KIND.consumer) {
      consumerRuns.add(
        String(s.attributes['pgsched.run_id'] ?? s.attributes['messaging.message.id']),
      )
    }
  }
  return { spans: byName, spanCount: spans.length, consumerRuns: consumerRuns.size }
}

/** One drain of `n` fresh runs of `kind`, telemetry `mode`. */
async function drainOnce(
  ctx: Ctx,
  kind: Kind,
  n: number,
  mode: Mode,
  label: string,
  receiver: Receiver,
): Promise<Drain> {
  const url = await ctx.pg.createPgschedDatabase(`bench_telemetry_${kind}_${label}`)
  const sql = createSql(url, { max: 1 })
  try {
    const warmup = WARMUP[kind]
    await seedQueuedRuns(sql, warmup, kind)
    const pgPids = await ctx.pg.pids()
    receiver.take()
    const firstMetricPost = receiver.metricPosts
    const worker = await startPgschedProcess('worker', url, {
      PGSCHED_WORKER_CONCURRENCY: String(CONCURRENCY),
      ...telemetryEnv(mode, receiver.endpoint),
    })
    let measured: Omit<Drain, 'spans' | 'spanCount' | 'consumerRuns' | 'metricPosts'>
    try {
      // The warm-up, not measured: a new process runs its code (the SDK's most of all) slowly
      // until V8 has compiled it, about 0.5 s of CPU that a long-lived worker pays once.
      await until(async () => (await remaining(sql)) === 0, 180_000, 'the warm-up', POLL_MS)
      // Each drain starts without the previous one's dirty pages waiting for a checkpoint.
      await sql`CHECKPOINT`
      await seedQueuedRuns(sql, n, kind)
      const workerCpu = cpuWindow(() => [worker.child.pid!])
      const postgresCpu = cpuWindow(() => pgPids)
      const machine0 = machineBusySeconds()
      const own0 = ownCpuSeconds()
      const t0 = performance.now()
      const runs = await remaining(sql)
      // Generous (5 commands or 50 tasks a second); past it the workload is reported as slow.
      const limitMs = Math.max(60_000, (n / (kind === 'command' ? 5 : 50)) * 1000)
      let left = runs
      const finished = await within(
        async () => {
          left = await remaining(sql)
          return left === 0
        },
        limitMs,
        POLL_MS,
      )
      if (!finished) {
        throw new TimeLimit(
          `the ${kind} drain, telemetry ${mode}`,
          limitMs,
          `${runs - left} of ${runs} runs in ${(since(t0) / 1000).toFixed(0)} s`,
        )
      }
      const seconds = since(t0) / 1000
      const machine = machineBusySeconds() - machine0
      const own = ownCpuSeconds() - own0
      const workerCpuSeconds = workerCpu.stop()
      const postgresCpuSeconds = postgresCpu.stop()
      const workerCpuMs = (workerCpuSeconds * 1000) / runs
      const postgresCpuMs = (postgresCpuSeconds * 1000) / runs
      const otherCores =
        Math.max(0, machine - own - workerCpuSeconds - postgresCpuSeconds) / seconds
      const [ok] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pgsched.runs WHERE status = 'succeeded'`
      if (ok!.n !== n + warmup)
        throw new Error(`telemetry: ${ok!.n} of ${n + warmup} ${kind} runs succeeded`)
      measured = {
        mode,
        runs,
        perSecond: runs / seconds,
        workerCpuMs,
        postgresCpuMs,
        otherCores,
        ...(await scrapeMetrics(worker)),
      }
    } finally {
      // Stopping flushes the SDK: every span has been posted once the process has exited.
      const code = await worker.stop()
      if (code !== 0)
        ctx.log(`telemetry: worker exited with ${code}:\n${worker.logs().slice(-2000)}`)
    }
    return {
      ...measured,
      metricPosts: receiver.metricPosts - firstMetricPost,
      ...summarizeSpans(receiver.take()),
    }
  } finally {
    await sql.end()
  }
}

/** The median; of an even count, the mean of the two middle values. */
function mid(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const h = sorted.length / 2
  return sorted.length % 2 ? sorted[Math.floor(h)]! : (sorted[h - 1]! + sorted[h]!) / 2
}

const fmt = (v: number, digits = 0) =>
  v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })

/**
 * `pairs` off/on pairs of drains of `n` runs of `kind`. The order alternates between pairs (off,
 * on, on, off, …) so that a drift over the run (the cluster's WAL and caches growing) weighs on
 * both modes alike.
 */
async function pairsOf(
  ctx: Ctx,
  kind: Kind,
  n: number,
  pairs: number,
  receiver: Receiver,
): Promise<{ off: Drain; on: Drain }[]> {
  const out: { off: Drain; on: Drain }[] = []
  for (let i = 0; i < pairs; i++) {
    const order: Mode[] = i % 2 === 0 ? ['off', 'on'] : ['on', 'off']
    const pair: Partial<Record<Mode, Drain>> = {}
    for (const mode of order) {
      ctx.log(`telemetry: ${kind}, pair ${i + 1} of ${pairs}, telemetry ${mode}`)
      const d = await drainOnce(ctx, kind, n, mode, `${i}_${mode}`, receiver)
      ctx.log(
        `telemetry: ${fmt(d.perSecond)} runs/s, worker ${fmt(d.workerCpuMs, 3)} CPU-ms/run, ${d.spanCount} spans, other processes ${fmt(d.otherCores, 2)} cores`,
      )
      pair[mode] = d
    }
    out.push(pair as { off: Drain; on: Drain })
  }
  return out
}

/** What proves each mode was what it says, for one kind: a sentence. */
function proof(kind: Kind, n: number, pairs: { off: Drain; on: Drain }[]): string {
  const on = pairs.map((p) => p.on)
  const off = pairs.map((p) => p.off)
  const spans = new Map<string, number>()
  for (const d of on) for (const [k, v] of d.spans) spans.set(k, (spans.get(k) ?? 0) + v)
  const byName = [...spans]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${fmt(v / on.length)}`)
    .join(', ')
  const series = (ds: Drain[]) => ds.map((d) => d.metricSeries ?? 'not printed').join(', ')
  const finished = on.map((d) => d.runsFinishedMetric ?? 'none').join(', ')
  return (
    `${kind === 'task' ? 'No-op tasks' : '`true` commands'}, telemetry on: per drain of ${fmt(n)} runs (and ${fmt(WARMUP[kind])} warm-up runs before them) the receiver got ${on.map((d) => fmt(d.spanCount)).join(', ')} spans; ` +
    `runs with a CONSUMER span ${on.map((d) => fmt(d.consumerRuns)).join(', ')}; per drain on average: ${byName || 'none'}. ` +
    `GET /metrics at the end: ${series(on)} pgsched_* samples (pgsched_runs_finished_total summed: ${finished}); OTLP metric exports ${on.map((d) => d.metricPosts).join(', ')}. ` +
    `Telemetry off: ${off.map((d) => d.spanCount).join(', ')} spans, ${series(off)} pgsched_* samples.`
  )
}

function pairLine(kind: Kind, pairs: { off: Drain; on: Drain }[]): string {
  return `${kind === 'task' ? 'No-op tasks' : '`true` commands'}, each pair off / on: runs/s (worker CPU-ms per run; cores busy with other processes): ${pairs
    .map(
      (p) =>
        `${fmt(p.off.perSecond)} / ${fmt(p.on.perSecond)} = ${fmt(p.on.perSecond / p.off.perSecond, 3)} (${fmt(p.off.workerCpuMs, 3)} / ${fmt(p.on.workerCpuMs, 3)}; ${fmt(p.off.otherCores, 2)} / ${fmt(p.on.otherCores, 2)})`,
    )
    .join('; ')}.`
}

/** Workload 6. */
export const telemetryCost: Workload = async (ctx) => {
  // Short drains, many pairs: the median resists a burst of other load better than 3 long pairs.
  const tasks = ctx.scale(6_000, 2_000)
  const taskPairs = ctx.scale(5, 2)
  const commands = ctx.scale(200, 60)
  const commandPairs = 1
  const receiver = await startBufferingReceiver()
  const figures: Figure[] = []
  const notes: string[] = []
  try {
    const t = await pairsOf(ctx, 'task', tasks, taskPairs, receiver)
    const c = await pairsOf(ctx, 'command', commands, commandPairs, receiver)
    const fig = (metric: string, value: number, unit: string) =>
      figures.push({ system: SYSTEMS.pgsched, metric, value, unit })
    fig(METRIC.telemetryOffTask10, mid(t.map((p) => p.off.perSecond)), 'runs/s')
    fig(METRIC.telemetryOnTask10, mid(t.map((p) => p.on.perSecond)), 'runs/s')
    fig(METRIC.telemetryRatioTask10, mid(t.map((p) => p.on.perSecond / p.off.perSecond)), '×')
    fig(METRIC.telemetryCpuOffTask, mid(t.map((p) => p.off.workerCpuMs)), 'CPU-ms')
    fig(METRIC.telemetryCpuOnTask, mid(t.map((p) => p.on.workerCpuMs)), 'CPU-ms')
    fig(
      METRIC.telemetrySpansPerTask,
      t.reduce((s, p) => s + p.on.spanCount, 0) / (tasks * t.length),
      'spans',
    )
    fig(METRIC.telemetryOffCommand10, mid(c.map((p) => p.off.perSecond)), 'runs/s')
    fig(METRIC.telemetryOnCommand10, mid(c.map((p) => p.on.perSecond)), 'runs/s')
    fig(METRIC.telemetryRatioCommand10, mid(c.map((p) => p.on.perSecond / p.off.perSecond)), '×')
    notes.push(
      `Each drain: a fresh database and one \`pgsched worker\` at concurrency ${CONCURRENCY}, which first drains ${fmt(WARMUP.task)} warm-up runs (${WARMUP.command} for commands), not measured: a new process runs its code slowly until V8 has compiled it, and the SDK is most of that code (measured: about 0.5 s of CPU, which put the first, cold version of this workload at 0.86×). Then a CHECKPOINT and ${fmt(tasks)} no-op task runs (${fmt(commands)} \`true\` command runs) queued in bulk as in workload 2; runs/s and the timing as in workload 2. ${taskPairs} off/on pairs of task drains (order alternating: off, on, on, off, …) and ${commandPairs} of command drains, all in this run; the ratio is the median of each pair's on ÷ off, the runs/s the medians of each mode.`,
      "Off: OTEL_SDK_DISABLED=true. On: OTEL_EXPORTER_OTLP_ENDPOINT (a receiver in the benchmark process that keeps the protobuf it is sent and decodes it after each drain), OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, the default sampler (parentbased_always_on) and the SDK's default batching (the batch span processor: 5 s or 512 spans per export, 2,048 queued at most); metrics in memory for GET /metrics and pushed over OTLP every 60 s. The receiver answers at once: the network cost of a real backend is not included, the encoding is.",
      `Worker CPU: CPU-seconds of the worker process (its own threads, not the commands it spawns) over the window ÷ the runs drained; Postgres used ${fmt(mid(t.map((p) => p.off.postgresCpuMs)), 3)} / ${fmt(mid(t.map((p) => p.on.postgresCpuMs)), 3)} CPU-ms per task run off / on. Cores busy with other processes: the machine's busy CPU time (/proc/stat) over the window less the worker's, Postgres' and the benchmark's, ÷ the window: how much else ran beside the drain (for command drains it includes the commands themselves, short-lived children of the worker that its CPU misses).`,
      pairLine('task', t),
      pairLine('command', c),
      proof('task', tasks, t),
      proof('command', commands, c),
    )
  } finally {
    await receiver.close()
  }
  return {
    id: 'telemetry',
    title: 'The cost of telemetry: end-to-end drain with tracing and metrics off and on',
    figures,
    notes,
  }
}
