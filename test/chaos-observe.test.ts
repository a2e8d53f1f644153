/**
 * The chaos drills' observer (chaos/observe/): the invariant checks against a real database, each
 * fed a small history written as rows (a per-second cron job with a gap in its fault window and
 * five acknowledged one-off jobs), clean and then with one known defect at a time; and the
 * timeline SVG and report writer.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { checkInvariants } from '../chaos/observe/invariants.ts'
import { writeReport } from '../chaos/observe/report.ts'
import { timelineSvg } from '../chaos/observe/svg.ts'
import type {
  Ack,
  CheckName,
  CheckOptions,
  DrillChecks,
  DrillResult,
  Timeline,
  Windows,
} from '../chaos/observe/types.ts'
import type { SqlPool } from '../src/db/client.ts'
import { setup, type TestBundle } from './helpers.ts'

let t: TestBundle
let sql: SqlPool
let histories = 0

beforeAll(async () => {
  t = await setup()
  sql = t.sql
})
afterAll(() => t.close())

/** A history the checks read: ids, the workload's record and the fault window. */
interface History {
  /** The history's start, ms, on a whole second. */
  t0: number
  cron: string
  jobs: string[]
  acks: Ack[]
  timeline: Timeline
  windows: Windows
}

/** Margin the tests pass: the fault window is 17.0 s – 23.0 s after t0. */
const MARGIN_MS = 500

/**
 * A clean 40 s history, an hour apart from every other one so that their rows never mix: a
 * `* * * * * *` job fired every second from 1 to 39 except 18–22 (the fault, 17.5 s – 22.5 s),
 * its run at 23 the latest missed tick; six acknowledged one-off jobs at 2–6 s and 23 s, each
 * with one succeeded run of one attempt; a REST submission refused at 18 s.
 */
async function history(): Promise<History> {
  const t0 = Math.floor(Date.now() / 1000) * 1000 - ++histories * 3_600_000
  const at = (s: number) => new Date(t0 + s * 1000)
  const [cron] = await sql<{ id: string }[]>`
    INSERT INTO pgsched.jobs (owner, name, kind, task, schedule, created_at)
    VALUES ('ops', 'chaos-cron', 'task', 'echo', '* * * * * *', ${at(0)}) RETURNING id::text`
  for (let s = 1; s <= 39; s++) {
    if (s >= 18 && s <= 22) continue
    await run(cron!.id, at(s), at(s + 0.02))
  }
  const jobs: string[] = []
  const acks: Ack[] = []
  for (const [i, s] of [2, 3, 4, 5, 6, 23].entries()) {
    const [job] = await sql<{ id: string }[]>`
      INSERT INTO pgsched.jobs (owner, name, kind, task, status, created_at)
      VALUES ('ops', ${`chaos-rest-${i}`}, 'task', 'echo', 'completed', ${at(s)}) RETURNING id::text`
    await run(job!.id, at(s), at(s))
    jobs.push(job!.id)
    acks.push({
      jobId: job!.id,
      via: i % 2 ? 'sql' : 'rest',
      at: t0 + s * 1000 + 50,
      sentAt: t0 + s * 1000,
      kind: 'quick',
    })
  }
  const windows = { faultStart: t0 + 17_500, recovered: t0 + 22_500 }
  const timeline: Timeline = {
    start: t0,
    end: t0 + 40_000,
    cronJobId: cron!.id,
    cronCreatedAt: t0,
    seconds: Array.from({ length: 41 }, (_, i) => ({
      second: t0 / 1000 + i,
      accepted: i >= 18 && i <= 22 ? 0 : 7,
      refused: i >= 18 && i <= 22 ? 7 : 0,
      answerMsMax: i >= 18 && i <= 22 ? 250 : 20,
      leader: i >= 18 && i <= 22 ? null : i < 18 ? 'host:1' : 'host:2',
      primary: i < 20 ? 'node<1>&' : 'node2',
    })),
    marks: [
      { at: windows.faultStart, label: 'fault' },
      { at: windows.recovered, label: 'recovered' },
    ],
    refusals: [
      {
        via: 'rest',
        at: t0 + 18_100,
        sentAt: t0 + 18_000,
        status: 503,
        ms: 100,
        error: 'database_unavailable',
      },
    ],
    workerDeaths: [],
  }
  return { t0, cron: cron!.id, jobs, acks, timeline, windows }
}

/** A succeeded run of `jobId` for `scheduledFor`, created at `createdAt`, with one attempt of 0.2 s. */
async function run(
  jobId: string,
  scheduledFor: Date,
  createdAt: Date,
  attempts = 1,
): Promise<string> {
  const start = new Date(createdAt.getTime() + 100)
  const end = new Date(createdAt.getTime() + 300)
  const [r] = await sql<{ id: string }[]>`
    INSERT INTO pgsched.runs (job_id, scheduled_for, status, created_at, started_at, finished_at, worker)
    VALUES (${jobId}, ${scheduledFor}, 'succeeded', ${createdAt}, ${start}, ${end}, 'w1') RETURNING id::text`
  for (let a = 1; a <= attempts; a++) {
    await sql`
      INSERT INTO pgsched.run_attempts (run_id, attempt, worker, started_at, finished_at, outcome)
      VALUES (${r!.id}, ${a}, 'w1', ${start}, ${end}, 'succeeded')`
  }
  return r!.id
}

function check(h: History, options: CheckOptions = {}): Promise<DrillChecks> {
  return checkInvariants(
    t.url,
    { acknowledged: () => h.acks, timeline: () => h.timeline },
    h.windows,
    { marginMs: MARGIN_MS, succeedWithinMs: 2_000, ...options },
  )
}

/** The names of the checks that failed. */
function failed(result: DrillChecks): CheckName[] {
  return result.checks.filter((c) => !c.passed).map((c) => c.name)
}

function named(result: DrillChecks, name: CheckName) {
  return result.checks.find((c) => c.name === name)!
}

describe('checkInvariants', () => {
  it('passes a clean history and measures its fault', async () => {
    const h = await history()
    const result = await check(h)
    expect(failed(result)).toEqual([])
    expect(result.passed).toBe(true)
    expect(result.checks.map((c) => c.name)).toEqual([
      'acknowledged-exist',
      'acknowledged-succeeded',
      'no-duplicate-tick',
      'no-overlapping-attempts',
      'cron-live-windows-fired',
      'cron-catch-up-once',
      'no-worker-dead-outside-fault',
      'api-answers-fast',
    ])
    expect(result.figures).toMatchObject({
      rpoJobsLost: 0,
      duplicates: 0,
      ticksMissed: 5,
      // The last tick before the fault was fired at 17.02 s, the first after at 23.02 s.
      rtoSchedulerMs: 6_000,
      // The last run before finished at 17.32 s (the tick's), the first after at 23.3 s.
      rtoExecutionMs: 5_980,
      // Refused at 18.0 s, the next acknowledgement sent after it arrived at 23.05 s.
      rtoSubmissionsMs: 5_050,
      slowestAnswerDownMs: 100,
    })
    const second = (s: number) => result.timeline.seconds.find((r) => r.second === h.t0 / 1000 + s)!
    expect(second(17)).toMatchObject({ ticks: 1, runsFinished: 1 })
    expect(second(20)).toMatchObject({ ticks: 0, runsFinished: 0 })
  })

  it('names a second run of one cron second as a duplicate tick, with its job id', async () => {
    const h = await history()
    await run(h.cron, new Date(h.t0 + 5_300), new Date(h.t0 + 5_300))
    const result = await check(h)
    expect(failed(result)).toEqual(['no-duplicate-tick'])
    expect(named(result, 'no-duplicate-tick').ids).toEqual([h.cron])
    expect(named(result, 'no-duplicate-tick').details).toContain(
      new Date(h.t0 + 5_000).toISOString(),
    )
    expect(result.figures.duplicates).toBe(1)
  })

  it('names a one-off job run twice as a duplicate', async () => {
    const h = await history()
    await run(h.jobs[3]!, new Date(h.t0 + 30_000), new Date(h.t0 + 30_000))
    const result = await check(h)
    expect(failed(result)).toEqual(['no-duplicate-tick'])
    expect(named(result, 'no-duplicate-tick').ids).toEqual([h.jobs[3]])
  })

  it('names an acknowledged job missing from the database as lost, and counts it in the RPO', async () => {
    const h = await history()
    h.acks.push({
      jobId: '987654321',
      via: 'rest',
      at: h.t0 + 10_000,
      sentAt: h.t0 + 9_990,
      kind: 'quick',
    })
    const result = await check(h)
    expect(failed(result)).toEqual(['acknowledged-exist'])
    expect(named(result, 'acknowledged-exist').ids).toEqual(['987654321'])
    expect(named(result, 'acknowledged-exist').details).toContain('987654321')
    expect(result.figures.rpoJobsLost).toBe(1)
  })

  it('names an acknowledged job whose run did not succeed', async () => {
    const h = await history()
    await sql`UPDATE pgsched.runs SET status = 'dead' WHERE job_id = ${h.jobs[2]!}`
    const result = await check(h)
    expect(failed(result)).toEqual(['acknowledged-succeeded'])
    expect(named(result, 'acknowledged-succeeded').ids).toEqual([h.jobs[2]])
    expect(named(result, 'acknowledged-succeeded').details).toContain(`${h.jobs[2]} (dead)`)
  })

  it('names a run whose two attempts executed at the same time', async () => {
    const h = await history()
    const [r] = await sql<
      { id: string }[]
    >`SELECT id::text FROM pgsched.runs WHERE job_id = ${h.jobs[1]!}`
    // Attempt 1 ran 3.1 s – 3.3 s; attempt 2 starts at 3.15 s, on another worker.
    await sql`
      INSERT INTO pgsched.run_attempts (run_id, attempt, worker, started_at, finished_at, outcome)
      VALUES (${r!.id}, 2, 'w2', ${new Date(h.t0 + 3_150)}, ${new Date(h.t0 + 3_400)}, 'succeeded')`
    const result = await check(h)
    expect(failed(result)).toEqual(['no-overlapping-attempts'])
    expect(named(result, 'no-overlapping-attempts').ids).toEqual([h.jobs[1]])
    expect(named(result, 'no-overlapping-attempts').details).toContain(
      `run ${r!.id} of job ${h.jobs[1]}`,
    )
    expect(result.figures.duplicates).toBe(1)
  })

  it('accepts attempts of one run that follow each other', async () => {
    const h = await history()
    const [r] = await sql<
      { id: string }[]
    >`SELECT id::text FROM pgsched.runs WHERE job_id = ${h.jobs[1]!}`
    await sql`
      INSERT INTO pgsched.run_attempts (run_id, attempt, worker, started_at, finished_at, outcome)
      VALUES (${r!.id}, 2, 'w2', ${new Date(h.t0 + 3_300)}, ${new Date(h.t0 + 3_500)}, 'succeeded')`
    expect(failed(await check(h))).toEqual([])
  })

  it('names a cron second missed outside the fault window', async () => {
    const h = await history()
    await sql`DELETE FROM pgsched.runs WHERE job_id = ${h.cron} AND scheduled_for = ${new Date(h.t0 + 8_000)}`
    const result = await check(h)
    expect(failed(result)).toEqual(['cron-live-windows-fired'])
    expect(named(result, 'cron-live-windows-fired').ids).toEqual([
      new Date(h.t0 + 8_000).toISOString(),
    ])
  })

  it('names the missed ticks of a gap filled in late (a backfill, not the latest missed tick once)', async () => {
    const h = await history()
    for (let s = 18; s <= 22; s++)
      await run(h.cron, new Date(h.t0 + s * 1000), new Date(h.t0 + 23_010))
    const result = await check(h)
    expect(failed(result)).toEqual(['cron-catch-up-once'])
    // 18 s follows 17 s, which fired: late without a gap; so do 19 and 20 (21 and 22 are < 2.5 s late).
    expect(named(result, 'cron-catch-up-once').ids).toHaveLength(3)
    expect(named(result, 'cron-catch-up-once').details).toContain(
      new Date(h.t0 + 18_000).toISOString(),
    )
  })

  it('names a worker declared dead outside the fault window, unless it was killed on purpose', async () => {
    const h = await history()
    await sql`
      INSERT INTO pgsched.workers (name, host, pid, concurrency, state, stopped_at, heartbeat_at)
      VALUES (${`gone-${h.t0}`}, 'h', 1, 1, 'dead', ${new Date(h.t0 + 30_000)}, ${new Date(h.t0 + 25_000)}),
        (${`in-fault-${h.t0}`}, 'h', 2, 1, 'dead', ${new Date(h.t0 + 20_000)}, ${new Date(h.t0 + 15_000)})`
    const result = await check(h)
    expect(failed(result)).toEqual(['no-worker-dead-outside-fault'])
    expect(named(result, 'no-worker-dead-outside-fault').ids).toEqual([`gone-${h.t0}`])
    expect(failed(await check(h, { expectDead: [`gone-${h.t0}`] }))).toEqual([])
  })

  it('names REST answers that hung or were not a 503', async () => {
    const h = await history()
    h.timeline.refusals.push(
      {
        via: 'rest',
        at: h.t0 + 27_000,
        sentAt: h.t0 + 19_000,
        status: null,
        ms: 8_000,
        error: 'TimeoutError',
      },
      {
        via: 'rest',
        at: h.t0 + 20_010,
        sentAt: h.t0 + 20_000,
        status: 500,
        ms: 10,
        error: 'internal',
      },
      // SQL refusals are not the API's answers.
      {
        via: 'sql',
        at: h.t0 + 21_000,
        sentAt: h.t0 + 20_000,
        status: null,
        ms: 1_000,
        error: 'ECONNRESET',
      },
    )
    const result = await check(h)
    expect(failed(result)).toEqual(['api-answers-fast'])
    expect(named(result, 'api-answers-fast').ids).toEqual([
      `TimeoutError after 8.0 s, sent ${new Date(h.t0 + 19_000).toISOString()}`,
      `500 after 0.0 s, sent ${new Date(h.t0 + 20_000).toISOString()}`,
    ])
    expect(result.figures.slowestAnswerDownMs).toBe(8_000)
    expect(failed(await check(h, { slowAnswerMs: 10_000 }))).toEqual(['api-answers-fast'])
  })

  it('after a restore to a point in time, names a job submitted after the point that exists', async () => {
    const h = await history()
    // Jobs 0-2 were sent before the point (2, 3 and 4 s); 3, 4 and 5 after it, yet they exist.
    const result = await check(h, { pointInTime: h.t0 + 4_500 })
    expect(failed(result)).toEqual(['restore-point-respected'])
    expect(named(result, 'restore-point-respected').ids).toEqual(h.jobs.slice(3))
  })

  it('skips the checks it is told to, and counts only acknowledgements up to a point in time', async () => {
    const h = await history()
    h.acks.push({
      jobId: '987654322',
      via: 'sql',
      at: h.t0 + 35_000,
      sentAt: h.t0 + 34_990,
      kind: 'quick',
    })
    h.acks = h.acks.filter((a) => a.jobId !== h.jobs[5])
    const restored = await check(h, { pointInTime: h.t0 + 30_000 })
    expect(failed(restored)).toEqual([])
    expect(named(restored, 'restore-point-respected').details).toContain('none of the 1 jobs')
    const skipped = await check(h, { skip: ['acknowledged-exist'] })
    expect(failed(skipped)).toEqual([])
    expect(named(skipped, 'acknowledged-exist').details).toMatch(/^skipped/)
  })
})

describe('the report', () => {
  let folder: string
  beforeAll(() => {
    folder = mkdtempSync(`${tmpdir()}/chaos-report-`)
  })
  afterAll(() => rmSync(folder, { recursive: true, force: true }))

  async function result(
    number: number,
    drill: string,
    h: History,
    checks?: DrillChecks,
  ): Promise<DrillResult> {
    return {
      drill,
      number,
      fault: 'SIGKILL the <primary> & wait',
      windows: h.windows,
      checks: checks ?? (await check(h)),
    }
  }

  it('draws a well-formed SVG timeline with the marks, the bands and every series', async () => {
    const h = await history()
    const svg = timelineSvg(await result(3, 'primary-kill', h))
    expect(xmlErrors(svg)).toEqual([])
    expect(svg).toMatch(/<line [^>]*class="mark" data-label="fault"/)
    expect(svg).toMatch(/<line [^>]*class="mark" data-label="recovered"/)
    expect(svg).toContain('>fault</text>')
    expect(svg).toContain('>recovered</text>')
    for (const label of [
      'submissions / s',
      'slowest answer',
      'cron ticks / s',
      'runs finished / s',
      'leader',
      'primary',
    ]) {
      expect(svg).toContain(`>${label}</text>`)
    }
    // Names are escaped: the primary was called node<1>&.
    expect(svg).toContain('node&lt;1&gt;&amp;')
    expect(svg).toContain('>host:2</text>')
  })

  it('writes REPORT.md, report.json and one SVG per drill, and lists what broke', async () => {
    const clean = await history()
    const broken = await history()
    broken.acks.push({
      jobId: '987654323',
      via: 'rest',
      at: broken.t0 + 10_000,
      sentAt: broken.t0 + 9_990,
      kind: 'quick',
    })
    const results = [await result(1, 'worker-kill', clean), await result(3, 'primary-kill', broken)]
    const outcome = writeReport(results, folder, {
      command: 'npm run chaos -- all --quick',
      quick: true,
    })
    expect(outcome.passed).toBe(false)
    expect(outcome.failures).toEqual([
      expect.stringMatching(/^drill 3 primary-kill: acknowledged-exist: .*987654323/),
    ])
    const md = readFileSync(`${folder}/REPORT.md`, 'utf8')
    expect(md).toContain('| 1 | [worker-kill](#drill-1-worker-kill) |')
    expect(md).toContain('![timeline of drill 3 primary-kill](timeline-primary-kill.svg)')
    expect(md).toContain('| acknowledged-exist | ❌ FAIL |')
    expect(md).toMatch(/\| node \| v\d+/)
    expect(md).toContain('SIGKILL the <primary> & wait')
    const json = JSON.parse(readFileSync(`${folder}/report.json`, 'utf8'))
    expect(json.passed).toBe(false)
    expect(json.results).toHaveLength(2)
    expect(json.machine.cores).toBeGreaterThan(0)
    for (const d of ['worker-kill', 'primary-kill']) {
      expect(existsSync(`${folder}/timeline-${d}.svg`)).toBe(true)
      expect(xmlErrors(readFileSync(`${folder}/timeline-${d}.svg`, 'utf8'))).toEqual([])
    }
  })
})

/**
 * What makes `xml` not well-formed, as far as a hand-written SVG can go wrong: tags that do
 * not nest, unquoted attributes, a stray `<` or `&`, not exactly one root element.
 */
function xmlErrors(xml: string): string[] {
  const errors: string[] = []
  const stack: string[] = []
  let roots = 0
  const token =
    /<\?[\s\S]*?\?>|<!--[\s\S]*?-->|<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|<|&(?!(?:lt|gt|amp|quot|apos|#\d+);)/g
  for (const m of xml.matchAll(token)) {
    if (m[0] === '<' || m[0] === '&') {
      errors.push(`stray ${m[0]} at ${m.index}: ${xml.slice(m.index, m.index + 40)}`)
    } else if (m[2]) {
      if (m[1]) {
        const open = stack.pop()
        if (open !== m[2]) errors.push(`</${m[2]}> closes <${open}> at ${m.index}`)
      } else {
        if (stack.length === 0) roots++
        if (!m[4]) stack.push(m[2])
      }
    }
  }
  if (stack.length) errors.push(`unclosed: ${stack.join(', ')}`)
  if (roots !== 1) errors.push(`${roots} root elements`)
  return errors
}
