/**
 * @module
 * The invariants a drill must keep, checked in the database after the workload stopped, and the
 * figures measured from the workload and the database (RTOs, RPO, duplicates, slowest answer).
 * The missed-tick policy checked is the scheduler's (src/scheduler/README.md): after downtime a
 * schedule fires once, for its latest missed tick, so a gap in the cron's seconds is expected
 * while no leader reaches the database, and no tick is fired late to fill it.
 */
import postgres from 'postgres'

import type {
  Ack,
  Check,
  CheckName,
  CheckOptions,
  DrillChecks,
  Figures,
  Timeline,
  Windows,
  Workload,
} from './types.ts'
import { WORKLOAD_JOB_PREFIX } from './workload.ts'

/** Run statuses after which a run never changes by itself: waiting for `succeeded` stops there. */
const FINAL = new Set(['succeeded', 'dead', 'cancelled', 'skipped'])

/** A cron run created this long after its second was fired late (a catch-up or a backfill). */
const LATE_TICK_MS = 2_500

/** How many ids a failed check lists in its details (all of them are in `ids`). */
const LIST_AT_MOST = 20

/** A run of one of the workload's jobs, as the checks read it. */
interface RunRow {
  id: string
  job_id: string
  scheduled_for: Date
  status: string
  created_at: Date
  finished_at: Date | null
}

/** An attempt of one of those runs. */
interface AttemptRow {
  run_id: string
  job_id: string
  attempt: number
  worker: string
  started_at: Date
  finished_at: Date | null
  outcome: string
  error: string | null
}

/** Checks the invariants of one drill against the database at `adminUrl` (a superuser URL). */
export async function checkInvariants(
  adminUrl: string,
  workload: Pick<Workload, 'acknowledged' | 'timeline'>,
  windows: Windows,
  options: CheckOptions = {},
): Promise<DrillChecks> {
  const sql = postgres(adminUrl, { max: 1, connect_timeout: 10, onnotice: () => {} })
  try {
    return await check(sql, workload.acknowledged(), workload.timeline(), windows, options)
  } finally {
    await sql.end({ timeout: 1 })
  }
}

async function check(
  sql: postgres.Sql,
  allAcks: Ack[],
  timeline: Timeline,
  windows: Windows,
  options: CheckOptions,
): Promise<DrillChecks> {
  const margin = options.marginMs ?? 2_000
  const skip = new Set(options.skip ?? [])
  const acks = allAcks.filter(
    (a) => options.pointInTime === undefined || a.at <= options.pointInTime,
  )
  const ackIds = [...new Set(acks.map((a) => a.jobId))]
  const faultFrom = windows.faultStart - margin
  const faultTo = windows.recovered + margin
  const inFault = (ms: number) => ms >= faultFrom && ms <= faultTo

  // 1. Every acknowledged job exists and its run succeeds within the bounded wait.
  const deadline = Date.now() + (options.succeedWithinMs ?? 90_000)
  let states = new Map<string, string[]>()
  for (;;) {
    states = await jobStates(sql, ackIds)
    const pending = ackIds.filter((id) => {
      const s = states.get(id)
      return s && !s.includes('succeeded') && !s.every((x) => FINAL.has(x))
    })
    if (pending.length === 0 || Date.now() > deadline) break
    await new Promise((r) => setTimeout(r, 1_000))
  }
  const lost = ackIds.filter((id) => !states.has(id))
  const notSucceeded = ackIds.filter(
    (id) => states.has(id) && !states.get(id)!.includes('succeeded'),
  )

  // Every job of the workload: acknowledged or not (an uncertain commit may exist), and the cron.
  const jobIds = await workloadJobs(sql, ackIds, timeline)
  const runs = await sql<RunRow[]>`
    SELECT id::text, job_id::text, scheduled_for, status, created_at, finished_at
    FROM pgsched.runs WHERE job_id = ANY(${jobIds}::bigint[]) ORDER BY scheduled_for, id`
  const attempts = await sql<AttemptRow[]>`
    SELECT a.run_id::text, r.job_id::text, a.attempt, a.worker, a.started_at, a.finished_at,
      a.outcome, a.error
    FROM pgsched.run_attempts a JOIN pgsched.runs r ON r.id = a.run_id
    WHERE r.job_id = ANY(${jobIds}::bigint[]) ORDER BY a.run_id, a.attempt`

  // 2. No occurrence fired twice: one run per cron second, one run per one-off job.
  const occurrences = new Map<string, RunRow[]>()
  for (const r of runs) {
    const key =
      r.job_id === timeline.cronJobId
        ? `${r.job_id}@${new Date(Math.floor(r.scheduled_for.getTime() / 1000) * 1000).toISOString()}`
        : r.job_id
    occurrences.set(key, [...(occurrences.get(key) ?? []), r])
  }
  const doubled = [...occurrences].filter(([, rs]) => rs.length > 1)

  // 3. No run executed concurrently with itself: its attempts' [started, finished) are disjoint.
  const overlaps: string[] = []
  const overlapJobs: string[] = []
  const byRun = Map.groupBy(attempts, (a) => a.run_id)
  const now = Date.now()
  for (const [runId, as] of byRun) {
    for (let i = 0; i < as.length; i++) {
      for (let j = i + 1; j < as.length; j++) {
        const a = as[i]!
        const b = as[j]!
        const aEnd = a.finished_at?.getTime() ?? now
        const bEnd = b.finished_at?.getTime() ?? now
        if (a.started_at.getTime() < bEnd && b.started_at.getTime() < aEnd) {
          overlapJobs.push(a.job_id)
          overlaps.push(
            `run ${runId} of job ${a.job_id}: attempt ${a.attempt} (${a.worker}, ${span(a)}) and ${b.attempt} (${b.worker}, ${span(b)})`,
          )
        }
      }
    }
  }

  // 4. The cron: every second of the live windows fired; late runs only right after a gap.
  const cronRuns = runs.filter((r) => r.job_id === timeline.cronJobId)
  const fired = new Map<number, RunRow>()
  for (const r of cronRuns) fired.set(Math.floor(r.scheduled_for.getTime() / 1000), r)
  const cronFrom = Math.ceil(((timeline.cronCreatedAt ?? timeline.start) + margin) / 1000)
  const cronTo = Math.floor((timeline.end - margin) / 1000)
  const missedLive: number[] = []
  const missedInFault: number[] = []
  for (let s = cronFrom; s <= cronTo; s++) {
    if (fired.has(s)) continue
    if (inFault(s * 1000) || inFault(s * 1000 + 999)) missedInFault.push(s)
    else missedLive.push(s)
  }
  const lateWithoutGap: string[] = []
  for (const [s, r] of fired) {
    const lateness = r.created_at.getTime() - s * 1000
    if (lateness > LATE_TICK_MS && fired.has(s - 1)) {
      lateWithoutGap.push(`${iso(s)} fired ${(lateness / 1000).toFixed(1)} s late`)
    }
  }

  // 5. No worker declared dead outside the fault window (unless killed on purpose).
  const deaths = await workerDeaths(sql, timeline, attempts)
  const expected = new Set(options.expectDead ?? [])
  const wrongDeaths = deaths.filter((d) => !expected.has(d.worker) && !inFault(d.at))

  // 6. The API answers fast while the database is away, and its refusals are 503s.
  const slowMs = options.slowAnswerMs ?? 5_000
  const badAnswers = [
    ...acks
      .filter((a) => a.via === 'rest')
      .map((a) => ({ ...a, status: 201 as number | null, error: '' })),
    ...timeline.refusals.filter((r) => r.via === 'rest'),
  ]
    .filter((a) => a.at - a.sentAt > slowMs || (a.status !== 201 && a.status !== 503))
    .sort((a, b) => a.sentAt - b.sentAt)
    .map(
      (a) =>
        `${a.status ?? a.error} after ${((a.at - a.sentAt) / 1000).toFixed(1)} s, sent ${new Date(a.sentAt).toISOString()}`,
    )

  // 7. After a restore to a point in time: nothing submitted after the point exists.
  const point = options.pointInTime
  const sentAfter = point === undefined ? [] : allAcks.filter((a) => a.sentAt > point)
  const present = await jobStates(
    sql,
    sentAfter.map((a) => a.jobId),
  )
  const afterPoint = sentAfter.filter((a) => present.has(a.jobId)).map((a) => a.jobId)

  const checks: Check[] = [
    verdict(
      'acknowledged-exist',
      lost,
      `all ${ackIds.length} acknowledged jobs exist`,
      `${lost.length} of ${ackIds.length} acknowledged jobs are not in the database (lost): ${list(lost)}`,
    ),
    verdict(
      'acknowledged-succeeded',
      notSucceeded,
      `all ${ackIds.length - lost.length} acknowledged jobs present have a succeeded run`,
      `${notSucceeded.length} acknowledged jobs have no succeeded run: ${list(
        notSucceeded.map((id) => `${id} (${states.get(id)!.join(', ') || 'no run'})`),
      )}`,
    ),
    verdict(
      'no-duplicate-tick',
      doubled.map(([k]) => k.split('@')[0]!),
      `${occurrences.size} occurrences (${cronRuns.length} cron ticks), each with one run`,
      `${doubled.length} occurrences have more than one run: ${list(
        doubled.map(([k, rs]) => `job ${k} → runs ${rs.map((r) => r.id).join(', ')}`),
      )}`,
    ),
    verdict(
      'no-overlapping-attempts',
      overlapJobs,
      `${attempts.length} attempts of ${byRun.size} runs, none overlapping another of its run`,
      `${overlaps.length} pairs of attempts of one run executed at the same time: ${list(overlaps)}`,
    ),
    verdict(
      'cron-live-windows-fired',
      missedLive.map((s) => iso(s)),
      `every second fired outside the fault window (${cronTo - cronFrom + 1 - missedInFault.length} seconds); ${missedInFault.length} missed inside it`,
      `${missedLive.length} seconds outside the fault window did not fire: ${list(missedLive.map(iso))}`,
    ),
    verdict(
      'cron-catch-up-once',
      lateWithoutGap,
      `no tick fired late except right after a gap (the latest missed tick, once)`,
      `${lateWithoutGap.length} ticks fired late without a gap before them (missed ticks filled in): ${list(lateWithoutGap)}`,
    ),
    verdict(
      'no-worker-dead-outside-fault',
      wrongDeaths.map((d) => d.worker),
      `${deaths.length} workers declared dead, ${deaths.length - wrongDeaths.length} of them expected or within the fault window`,
      `workers declared dead outside the fault window: ${list(wrongDeaths.map((d) => `${d.worker} at ${new Date(d.at).toISOString()} (${d.source})`))}`,
    ),
    verdict(
      'api-answers-fast',
      badAnswers,
      `every REST answer within ${slowMs / 1000} s, every refusal a 503`,
      `${badAnswers.length} REST answers were slow (over ${slowMs / 1000} s) or not a 503: ${list(badAnswers)}`,
    ),
    ...(point === undefined
      ? []
      : [
          verdict(
            'restore-point-respected',
            afterPoint,
            `none of the ${sentAfter.length} jobs submitted after ${new Date(point).toISOString()} exists`,
            `${afterPoint.length} jobs submitted after the restore point exist: ${list(afterPoint)}`,
          ),
        ]),
  ].map((c) =>
    skip.has(c.name) ? { name: c.name, passed: true, details: `skipped (${c.details})` } : c,
  )

  const figures = measure(acks, timeline, windows, runs, cronRuns, {
    lost: lost.length,
    duplicates: doubled.length + overlaps.length,
    ticksMissed: missedInFault.length,
    margin,
  })
  return {
    passed: checks.every((c) => c.passed),
    checks,
    figures,
    timeline: enrich(timeline, runs, cronRuns),
  }
}

/** Each job of `ids` present in the database, with its runs' statuses (oldest first). */
async function jobStates(sql: postgres.Sql, ids: string[]): Promise<Map<string, string[]>> {
  const rows = await sql<{ id: string; statuses: string[] }[]>`
    SELECT j.id::text,
      coalesce(array_agg(r.status ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS statuses
    FROM pgsched.jobs j LEFT JOIN pgsched.runs r ON r.job_id = j.id
    WHERE j.id = ANY(${ids}::bigint[])
    GROUP BY j.id`
  return new Map(rows.map((r) => [r.id, r.statuses]))
}

/**
 * The acknowledged jobs, the cron job and every one-off job named like the workload's made while
 * it ran (another workload's cron job, still ticking, is not this one's).
 */
async function workloadJobs(
  sql: postgres.Sql,
  ackIds: string[],
  timeline: Timeline,
): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    SELECT id::text FROM pgsched.jobs
    WHERE name LIKE ${`${WORKLOAD_JOB_PREFIX}%`} AND schedule IS NULL
      AND created_at BETWEEN ${new Date(timeline.start - 5_000)} AND ${new Date(timeline.end + 5_000)}`
  return [
    ...new Set([
      ...ackIds,
      ...rows.map((r) => r.id),
      ...(timeline.cronJobId ? [timeline.cronJobId] : []),
    ]),
  ]
}

/** A worker declared dead, and where we learnt it. */
interface Death {
  worker: string
  at: number
  source: string
}

/**
 * Workers declared dead while the workload ran: sampled by the workload, still recorded in
 * `pgsched.workers`, or named by a lost attempt's error (a worker that came back is active again).
 */
async function workerDeaths(
  sql: postgres.Sql,
  timeline: Timeline,
  attempts: AttemptRow[],
): Promise<Death[]> {
  const rows = await sql<{ name: string; stopped_at: Date }[]>`
    SELECT name, stopped_at FROM pgsched.workers
    WHERE state = 'dead' AND stopped_at BETWEEN ${new Date(timeline.start)} AND ${new Date(timeline.end)}`
  const all: Death[] = [
    ...timeline.workerDeaths.map((d) => ({ ...d, source: 'sampled' })),
    ...rows.map((r) => ({ worker: r.name, at: r.stopped_at.getTime(), source: 'pgsched.workers' })),
    ...attempts
      .filter((a) => a.outcome === 'lost' && a.error?.includes('stopped sending heartbeats'))
      .map((a) => ({
        worker: a.worker,
        at: a.finished_at?.getTime() ?? a.started_at.getTime(),
        source: `lost attempt of run ${a.run_id}`,
      })),
  ]
  // One entry per worker and declaration (within 5 s counts as the same one).
  const out: Death[] = []
  for (const d of all.sort((a, b) => a.at - b.at)) {
    if (!out.some((o) => o.worker === d.worker && Math.abs(o.at - d.at) < 5_000)) out.push(d)
  }
  return out
}

/** The drill's figures: RTOs, RPO, duplicates, the slowest answer while down. */
function measure(
  acks: Ack[],
  timeline: Timeline,
  windows: Windows,
  runs: RunRow[],
  cronRuns: RunRow[],
  found: { lost: number; duplicates: number; ticksMissed: number; margin: number },
): Figures {
  const from = windows.faultStart - found.margin
  // Submissions: first refusal from the fault on → first acknowledgement sent after it.
  const firstFailed = timeline.refusals
    .filter((r) => r.sentAt >= from)
    .sort((a, b) => a.sentAt - b.sentAt)[0]
  const againAt = firstFailed
    ? acks.filter((a) => a.sentAt >= firstFailed.sentAt).sort((a, b) => a.at - b.at)[0]?.at
    : undefined
  const rtoSubmissionsMs = firstFailed
    ? againAt === undefined
      ? null
      : againAt - firstFailed.sentAt
    : 0
  const answersDown = [
    ...timeline.refusals.filter((r) => r.via === 'rest'),
    ...acks.filter((a) => a.via === 'rest').map((a) => ({ sentAt: a.sentAt, ms: a.at - a.sentAt })),
  ].filter((a) => a.sentAt >= from && a.sentAt <= windows.recovered + found.margin)
  return {
    rtoSubmissionsMs,
    rtoSchedulerMs: longestGap(
      cronRuns.map((r) => r.created_at.getTime()),
      windows,
    ),
    rtoExecutionMs: longestGap(
      runs.flatMap((r) => (r.finished_at ? [r.finished_at.getTime()] : [])),
      windows,
    ),
    rpoJobsLost: found.lost,
    duplicates: found.duplicates,
    slowestAnswerDownMs: answersDown.length ? Math.max(...answersDown.map((a) => a.ms)) : null,
    acknowledged: acks.length,
    refused: timeline.refusals.length,
    ticksMissed: found.ticksMissed,
  }
}

/**
 * The longest time between two consecutive events whose interval overlaps the fault window: the
 * last event before the fault → the first after it, when the fault stopped them. `null` without
 * events on both sides.
 */
export function longestGap(times: number[], windows: Windows): number | null {
  const sorted = [...times].sort((a, b) => a - b)
  let best: number | null = null
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!
    const b = sorted[i]!
    if (b >= windows.faultStart && a <= windows.recovered) best = Math.max(best ?? 0, b - a)
  }
  return best
}

/** The timeline with ticks per scheduled second and runs finished per second filled in. */
function enrich(timeline: Timeline, runs: RunRow[], cronRuns: RunRow[]): Timeline {
  const ticks = countBySecond(cronRuns.map((r) => r.scheduled_for.getTime()))
  const finished = countBySecond(
    runs.flatMap((r) => (r.finished_at ? [r.finished_at.getTime()] : [])),
  )
  return {
    ...timeline,
    seconds: timeline.seconds.map((s) => ({
      ...s,
      ticks: ticks.get(s.second) ?? 0,
      runsFinished: finished.get(s.second) ?? 0,
    })),
  }
}

function countBySecond(times: number[]): Map<number, number> {
  const m = new Map<number, number>()
  for (const t of times) {
    const s = Math.floor(t / 1000)
    m.set(s, (m.get(s) ?? 0) + 1)
  }
  return m
}

/** A check that passes when `bad` is empty. */
function verdict(name: CheckName, bad: string[], ok: string, failed: string): Check {
  return bad.length === 0
    ? { name, passed: true, details: ok }
    : { name, passed: false, details: failed, ids: [...new Set(bad)] }
}

function list(items: string[]): string {
  return items.length > LIST_AT_MOST
    ? `${items.slice(0, LIST_AT_MOST).join('; ')}; and ${items.length - LIST_AT_MOST} more`
    : items.join('; ')
}

function iso(second: number): string {
  return new Date(second * 1000).toISOString()
}

function span(a: AttemptRow): string {
  const t = (d: Date | null) => (d ? d.toISOString().slice(11, 23) : 'still running')
  return `${t(a.started_at)}–${t(a.finished_at)}, ${a.outcome}`
}
