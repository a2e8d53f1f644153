/**
 * @module
 * What every drill shares: the context it runs in, and {@link runDrill}, the frame of a drill —
 * start the workload, warm up, mark the fault and inject it, wait (bounded) for recovery, mark
 * it, settle, stop the workload and run the invariant checks.
 */
import postgres from 'postgres'
import { HOST, type Stack } from '../infra/stack.ts'
import { say, sleep, until } from '../infra/supervisor.ts'
import { checkInvariants } from '../observe/invariants.ts'
import type { CheckOptions, DrillChecks, DrillResult, Workload } from '../observe/types.ts'
import { startWorkload } from '../observe/workload.ts'

/** What a drill runs against. */
export interface DrillContext {
  stack: Stack
  quick: boolean
}

/** One drill. */
export interface Drill {
  number: number
  name: string
  run(ctx: DrillContext): Promise<DrillResult>
}

/** How long each phase lasts, quick or full. */
export function phases(quick: boolean) {
  return quick
    ? { warmupMs: 6_000, settleMs: 6_000, recoverWithinMs: 90_000, holdMs: 14_000 }
    : { warmupMs: 30_000, settleMs: 30_000, recoverWithinMs: 180_000, holdMs: 30_000 }
}

/** The frame's steps a drill fills in. */
export interface DrillSpec {
  number: number
  name: string
  /** Gets the stack ready for this drill, before the workload starts. */
  prepare?(): Promise<void>
  /** Injects the fault; returns what was done, in a sentence for the report. */
  inject(w: Workload): Promise<string>
  /** Resolves once the stack has recovered (the frame bounds it). */
  recovered(w: Workload, faultStart: number): Promise<unknown>
  /** Check options, computed once the drill ran (e.g. workers expected dead). */
  checkOptions?(): Promise<CheckOptions> | CheckOptions
  /** Extra notes for the report, computed at the end. */
  notes?(): Promise<string[]> | string[]
}

/** Runs one drill in the standard frame and returns its result (errors included, never thrown). */
export async function runDrill(ctx: DrillContext, spec: DrillSpec): Promise<DrillResult> {
  const p = phases(ctx.quick)
  const tag = `drill ${spec.number} ${spec.name}`
  const { stack } = ctx
  const target = await stack.pgsched.target()
  if (spec.prepare) {
    say(`${tag}: prepare`)
    await spec.prepare()
  }
  say(`${tag}: workload`)
  const w = await startWorkload(target, stack.probes, { quick: ctx.quick })
  let fault = ''
  let faultStart = 0
  let recovered = 0
  const notes: string[] = []
  let error: string | undefined
  try {
    await sleep(p.warmupMs)
    faultStart = Date.now()
    w.mark('fault')
    say(`${tag}: fault`)
    fault = await spec.inject(w)
    say(`${tag}: ${fault}; waiting for recovery`)
    await until(() => spec.recovered(w, faultStart), p.recoverWithinMs, `${tag} to recover`)
    recovered = Date.now()
    w.mark('recovered')
    say(
      `${tag}: recovered ${((recovered - faultStart) / 1000).toFixed(1)} s after the fault; settling`,
    )
    await sleep(p.settleMs)
  } catch (e) {
    error = e instanceof Error ? e.message : String(e)
    say(`${tag}: FAILED: ${error}`)
    recovered ||= Date.now()
  }
  await w.stop()
  say(`${tag}: checks`)
  let checks: DrillChecks
  try {
    checks = await checkInvariants(
      target.adminUrl,
      w,
      { faultStart, recovered },
      (await spec.checkOptions?.()) ?? {},
    )
  } catch (e) {
    error ??= `checks: ${e instanceof Error ? e.message : String(e)}`
    checks = emptyChecks(w)
  }
  try {
    notes.push(...((await spec.notes?.()) ?? []))
  } catch (e) {
    notes.push(`notes failed: ${e instanceof Error ? e.message : String(e)}`)
  }
  for (const c of checks.checks)
    say(`${tag}:   ${c.passed ? 'ok  ' : 'FAIL'} ${c.name}: ${c.details}`)
  const f = checks.figures
  say(
    `${tag}: ${checks.passed && !error ? 'passed' : 'FAILED'}; RTO submissions ${ms(f.rtoSubmissionsMs)}, scheduler ${ms(f.rtoSchedulerMs)}, execution ${ms(f.rtoExecutionMs)}; RPO ${f.rpoJobsLost} lost; ${f.duplicates} duplicates; ${f.acknowledged} acknowledged, ${f.refused} refused`,
  )
  for (const n of notes) say(`${tag}:   note: ${n}`)
  return {
    drill: spec.name,
    number: spec.number,
    fault,
    windows: { faultStart, recovered },
    checks: error ? { ...checks, passed: false } : checks,
    notes,
    error,
  }
}

function ms(v: number | null): string {
  return v === null ? 'n/a' : `${(v / 1000).toFixed(1)} s`
}

function emptyChecks(w: Workload): DrillChecks {
  return {
    passed: false,
    checks: [],
    figures: {
      rtoSubmissionsMs: null,
      rtoSchedulerMs: null,
      rtoExecutionMs: null,
      rpoJobsLost: 0,
      duplicates: 0,
      slowestAnswerDownMs: null,
      acknowledged: w.acknowledged().length,
      refused: w.timeline().refusals.length,
      ticksMissed: 0,
    },
    timeline: w.timeline(),
  }
}

/** Runs `query` on a short-lived superuser connection through HAProxy. */
export async function adminQuery<T extends object>(
  stack: Stack,
  query: (sql: postgres.Sql) => Promise<T[]>,
): Promise<T[]> {
  const sql = postgres(stack.pgsched.adminUrl(), { max: 1, connect_timeout: 3, onnotice: () => {} })
  try {
    return await query(sql)
  } finally {
    await sql.end({ timeout: 1 })
  }
}

/** The names (`pgsched.workers.name`) process `name` has registered under. */
export async function workerNames(stack: Stack, name: string): Promise<string[]> {
  const pid = stack.pgsched.get(name).proc?.pid
  if (pid === undefined) return []
  const rows = await adminQuery(
    stack,
    (sql) =>
      sql<
        { name: string }[]
      >`SELECT name FROM pgsched.workers WHERE name LIKE ${`${HOST}:${pid}:%`}`,
  )
  return rows.map((r) => r.name)
}

/** Whether the workload got an acknowledgement for a submission sent after `since`. */
export function acceptedSince(w: Workload, since: number): boolean {
  return w.acknowledged().some((a) => a.sentAt > since)
}
