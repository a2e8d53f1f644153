/**
 * @module Cron maths: which tick a schedule fires now, and the next one. Uses cron-parser; the SQL
 * check pgsched.validate_cron accepts a subset of what it accepts.
 */
import { CronExpressionParser } from 'cron-parser'

import { PgschedError } from './errors.ts'

function parse(schedule: string, timezone: string, currentDate: Date) {
  try {
    new Intl.DateTimeFormat('en', { timeZone: timezone })
  } catch (e) {
    throw new PgschedError(
      'validation',
      `timezone ${JSON.stringify(timezone)} is not an IANA time zone`,
      {
        cause: e,
        errors: [{ field: 'timezone', message: 'is not an IANA time zone name' }],
      },
    )
  }
  try {
    return CronExpressionParser.parse(schedule, { tz: timezone, currentDate })
  } catch (e) {
    throw new PgschedError(
      'validation',
      `schedule ${JSON.stringify(schedule)} cannot be planned: ${(e as Error).message}`,
      {
        cause: e,
        errors: [{ field: 'schedule', message: (e as Error).message }],
      },
    )
  }
}

/** The first tick strictly after `after`. */
export function cronNext(schedule: string, timezone: string, after: Date): Date {
  return parse(schedule, timezone, after).next().toDate()
}

/** The latest tick at or before `at`: the one cronNext would have planned. */
export function cronLatest(schedule: string, timezone: string, at: Date): Date {
  // cron-parser's prev() disagrees with next() around DST changes (a 02:30 tick moved to 03:30
  // on a spring-forward day is not found backwards), so step back two ticks with prev() and walk
  // forward with next(), which is what the scheduler plans with.
  const back = parse(schedule, timezone, new Date(at.getTime() + 1))
  back.prev()
  let latest = back.prev().toDate()
  for (;;) {
    const next = cronNext(schedule, timezone, latest)
    if (next.getTime() > at.getTime()) return latest
    latest = next
  }
}

/**
 * Plans a due schedule: the tick to fire is the latest one at or before `now` (after downtime
 * a schedule fires once, for its latest missed tick), and the next is the first after `now`.
 */
export function planDueTick(
  schedule: string,
  timezone: string,
  now: Date,
): { tick: Date; next: Date } {
  return { tick: cronLatest(schedule, timezone, now), next: cronNext(schedule, timezone, now) }
}

/** A scheduled job as the planner sees it: its first tick is unplanned, or a tick is due. */
export interface DueJob {
  id: number
  schedule: string
  timezone: string
  schedule_base_at: Date
  next_run_at: Date | null
  /** The database's now(): schedules are planned in database time. */
  now: Date
}

/** A planned tick: fire `tick` (null: only plan) and set next_run_at to `next`, if unchanged. */
export interface TickPlan {
  jobId: number
  expected: Date | null
  tick: Date | null
  next: Date
}

/** Plans one job: its first tick when unplanned, else the due tick to fire and the next one. */
export function planJob(job: DueJob): TickPlan {
  if (job.next_run_at === null) {
    return {
      jobId: job.id,
      expected: null,
      tick: null,
      next: cronNext(job.schedule, job.timezone, job.schedule_base_at),
    }
  }
  const { tick, next } = planDueTick(job.schedule, job.timezone, job.now)
  return { jobId: job.id, expected: job.next_run_at, tick, next }
}
