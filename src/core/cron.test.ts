import { describe, expect, it } from 'vitest'

import { cronLatest, cronNext, planDueTick } from './cron.ts'
import { PgschedError } from './errors.ts'

const at = (iso: string) => new Date(iso)
const iso = (d: Date) => d.toISOString()

/** The wall-clock time of `d` in `timeZone`, as HH:MM. */
function localTime(d: Date, timeZone: string): string {
  return new Intl.DateTimeFormat('en-GB', {
    timeZone,
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).format(d)
}

/** The next `n` ticks after `from`, each computed with cronNext from the one before. */
function ticks(schedule: string, timezone: string, from: Date, n: number): Date[] {
  const out: Date[] = []
  let t = from
  for (let i = 0; i < n; i++) {
    t = cronNext(schedule, timezone, t)
    out.push(t)
  }
  return out
}

describe('cronNext', () => {
  it('plans a 5-field schedule in UTC', () => {
    expect(iso(cronNext('30 12 * * *', 'UTC', at('2024-03-01T00:00:00Z')))).toBe(
      '2024-03-01T12:30:00.000Z',
    )
    expect(iso(cronNext('0 0 1 1 *', 'UTC', at('2024-03-01T00:00:00Z')))).toBe(
      '2025-01-01T00:00:00.000Z',
    )
    expect(iso(cronNext('*/5 * * * *', 'UTC', at('2024-03-01T10:02:59Z')))).toBe(
      '2024-03-01T10:05:00.000Z',
    )
  })

  it('plans a 6-field schedule with seconds first', () => {
    expect(iso(cronNext('*/15 * * * * *', 'UTC', at('2024-03-01T12:30:07Z')))).toBe(
      '2024-03-01T12:30:15.000Z',
    )
    expect(iso(cronNext('30 0 12 * * *', 'UTC', at('2024-03-01T12:00:29.999Z')))).toBe(
      '2024-03-01T12:00:30.000Z',
    )
  })

  it('is strictly after: at a tick instant it gives the following tick', () => {
    expect(iso(cronNext('30 12 * * *', 'UTC', at('2024-03-01T12:30:00Z')))).toBe(
      '2024-03-02T12:30:00.000Z',
    )
    expect(iso(cronNext('30 12 * * *', 'UTC', at('2024-03-01T12:29:59.999Z')))).toBe(
      '2024-03-01T12:30:00.000Z',
    )
    expect(iso(cronNext('*/15 * * * * *', 'UTC', at('2024-03-01T12:30:15Z')))).toBe(
      '2024-03-01T12:30:30.000Z',
    )
    expect(iso(cronNext('*/15 * * * * *', 'UTC', at('2024-03-01T12:30:15.500Z')))).toBe(
      '2024-03-01T12:30:30.000Z',
    )
  })

  it('plans in the time zone of the schedule', () => {
    // 09:00 in Tokyo (UTC+9, no DST) is 00:00 UTC.
    expect(iso(cronNext('0 9 * * *', 'Asia/Tokyo', at('2024-06-01T01:00:00Z')))).toBe(
      '2024-06-02T00:00:00.000Z',
    )
    // 09:00 in Kolkata (UTC+5:30) is 03:30 UTC.
    expect(iso(cronNext('0 9 * * *', 'Asia/Kolkata', at('2024-06-01T00:00:00Z')))).toBe(
      '2024-06-01T03:30:00.000Z',
    )
  })

  it('keeps a daily 09:00 job at 09:00 local across the spring change in Europe/Paris', () => {
    // Clocks go from 02:00 CET (UTC+1) to 03:00 CEST (UTC+2) on 2024-03-31.
    const got = ticks('0 9 * * *', 'Europe/Paris', at('2024-03-29T12:00:00Z'), 4)
    expect(got.map(iso)).toEqual([
      '2024-03-30T08:00:00.000Z',
      '2024-03-31T07:00:00.000Z',
      '2024-04-01T07:00:00.000Z',
      '2024-04-02T07:00:00.000Z',
    ])
    for (const t of got) expect(localTime(t, 'Europe/Paris')).toBe('09:00')
  })

  it('keeps a daily 09:00 job at 09:00 local across both changes in America/New_York', () => {
    // Spring forward on 2024-03-10 (EST UTC-5 to EDT UTC-4).
    const spring = ticks('0 9 * * *', 'America/New_York', at('2024-03-09T00:00:00Z'), 3)
    expect(spring.map(iso)).toEqual([
      '2024-03-09T14:00:00.000Z',
      '2024-03-10T13:00:00.000Z',
      '2024-03-11T13:00:00.000Z',
    ])
    // Fall back on 2024-11-03 (EDT to EST).
    const fall = ticks('0 9 * * *', 'America/New_York', at('2024-11-02T00:00:00Z'), 3)
    expect(fall.map(iso)).toEqual([
      '2024-11-02T13:00:00.000Z',
      '2024-11-03T14:00:00.000Z',
      '2024-11-04T14:00:00.000Z',
    ])
    for (const t of [...spring, ...fall]) expect(localTime(t, 'America/New_York')).toBe('09:00')
  })

  it('fires an hourly job once per real hour across the spring change', () => {
    const got = ticks('0 * * * *', 'Europe/Paris', at('2024-03-30T23:30:00Z'), 4)
    expect(got.map(iso)).toEqual([
      '2024-03-31T00:00:00.000Z',
      '2024-03-31T01:00:00.000Z',
      '2024-03-31T02:00:00.000Z',
      '2024-03-31T03:00:00.000Z',
    ])
  })
})

describe('cronLatest', () => {
  it('includes a tick exactly at the given instant', () => {
    const tick = at('2024-03-01T12:30:00Z')
    expect(iso(cronLatest('30 12 * * *', 'UTC', tick))).toBe(iso(tick))
    expect(iso(cronLatest('*/10 * * * * *', 'UTC', at('2024-03-01T12:30:20Z')))).toBe(
      '2024-03-01T12:30:20.000Z',
    )
  })

  it('gives the latest tick before the instant otherwise', () => {
    expect(iso(cronLatest('30 12 * * *', 'UTC', at('2024-03-01T12:29:59.999Z')))).toBe(
      '2024-02-29T12:30:00.000Z',
    )
    expect(iso(cronLatest('30 12 * * *', 'UTC', at('2024-03-01T12:30:00.001Z')))).toBe(
      '2024-03-01T12:30:00.000Z',
    )
    expect(iso(cronLatest('*/10 * * * * *', 'UTC', at('2024-03-01T12:30:25.500Z')))).toBe(
      '2024-03-01T12:30:20.000Z',
    )
  })

  it('works in a time zone, across the spring change', () => {
    expect(iso(cronLatest('0 9 * * *', 'Europe/Paris', at('2024-03-31T07:00:00Z')))).toBe(
      '2024-03-31T07:00:00.000Z',
    )
    expect(iso(cronLatest('0 9 * * *', 'Europe/Paris', at('2024-03-31T06:59:59Z')))).toBe(
      '2024-03-30T08:00:00.000Z',
    )
  })

  it.each([
    ['30 2 * * *', 'Europe/Paris', '2024-03-29T12:00:00Z'],
    ['30 2 * * *', 'America/New_York', '2024-03-08T12:00:00Z'],
    ['0 9 * * *', 'Europe/Paris', '2024-03-29T12:00:00Z'],
    ['0 * * * *', 'Europe/Paris', '2024-03-30T22:00:00Z'],
    ['30 2 * * *', 'Europe/Paris', '2024-10-25T12:00:00Z'],
  ])(
    'agrees with cronNext: each tick of %s in %s after %s is its own latest tick',
    (schedule, timezone, from) => {
      // The scheduler fires a tick planned by cronNext with planDueTick (cronLatest) at that instant:
      // if they disagree, the run is created for another occurrence, or not at all.
      for (const tick of ticks(schedule, timezone, at(from), 5)) {
        expect(iso(cronLatest(schedule, timezone, tick)), `tick ${iso(tick)}`).toBe(iso(tick))
      }
    },
  )
})

describe('planDueTick', () => {
  it('fires the tick at now, and plans the following one', () => {
    expect(planDueTick('0 9 * * *', 'Europe/Paris', at('2024-03-31T07:00:00Z'))).toEqual({
      tick: at('2024-03-31T07:00:00Z'),
      next: at('2024-04-01T07:00:00Z'),
    })
  })

  it('fires a tick that a DST change moved, when it is due', () => {
    // 02:30 does not exist in Paris on 2024-03-31; cronNext moves that tick to 03:30 CEST (01:30Z).
    const planned = cronNext('30 2 * * *', 'Europe/Paris', at('2024-03-30T12:00:00Z'))
    expect(iso(planned)).toBe('2024-03-31T01:30:00.000Z')
    // When it is due, the scheduler must fire that tick, not the day before's again (a run for
    // which already exists, so the DST day would get no run at all).
    expect(planDueTick('30 2 * * *', 'Europe/Paris', planned)).toEqual({
      tick: planned,
      next: at('2024-04-01T00:30:00Z'),
    })
  })

  it('fires only the latest missed tick after downtime', () => {
    expect(planDueTick('*/5 * * * *', 'UTC', at('2024-03-31T07:03:00Z'))).toEqual({
      tick: at('2024-03-31T07:00:00Z'),
      next: at('2024-03-31T07:05:00Z'),
    })
    expect(planDueTick('0 0 * * *', 'UTC', at('2024-03-31T07:03:00Z'))).toEqual({
      tick: at('2024-03-31T00:00:00Z'),
      next: at('2024-04-01T00:00:00Z'),
    })
  })

  it('handles seconds', () => {
    expect(planDueTick('*/20 * * * * *', 'UTC', at('2024-03-31T07:03:41.250Z'))).toEqual({
      tick: at('2024-03-31T07:03:40Z'),
      next: at('2024-03-31T07:04:00Z'),
    })
  })
})

describe('invalid expressions', () => {
  it.each(['nope', '61 * * * *', '* 24 * * *', '* * 32 * *', '* * * 13 *', '0 0 30 2 *'])(
    'throws PgschedError validation on the schedule field for %j',
    (schedule) => {
      for (const fn of [cronNext, cronLatest, planDueTick]) {
        let thrown: unknown
        try {
          fn(schedule, 'UTC', at('2024-03-01T00:00:00Z'))
        } catch (e) {
          thrown = e
        }
        expect(thrown).toBeInstanceOf(PgschedError)
        const err = thrown as PgschedError
        expect(err.code).toBe('validation')
        expect(err.errors[0]!.field).toBe('schedule')
        expect(err.errors[0]!.message.length).toBeGreaterThan(0)
        expect(err.cause).toBeDefined()
      }
    },
  )

  it('throws PgschedError validation for an unknown time zone', () => {
    expect(() => cronNext('* * * * *', 'Mars/Olympus', at('2024-03-01T00:00:00Z'))).toThrow(
      PgschedError,
    )
  })
})
