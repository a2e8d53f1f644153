/**
 * @module
 * The drills' steady workload: REST submissions at a fixed rate (each 201 recorded with its job
 * id), SQL submissions from a connection of their own, a `* * * * * *` cron job and a long
 * command now and then, plus a sampler that records, second by second, what was accepted and
 * refused, the slowest REST answer, the leader and the primary. It keeps going through outages:
 * every request has a time limit and every connection is made again after a failure.
 */
import postgres from 'postgres'

import type {
  Ack,
  Mark,
  Probes,
  Refusal,
  Target,
  Timeline,
  TimelineSecond,
  WorkerDeath,
  Workload,
  WorkloadOptions,
} from './types.ts'

/** Prefix of every job the workload submits: the checks find the workload's jobs by it. */
export const WORKLOAD_JOB_PREFIX = 'chaos-'

/** How often the sampler asks the probes; twice a second so each second gets a sample. */
const SAMPLE_INTERVAL_MS = 500

/** A probe that has not answered in this long counts as `null` for its sample. */
const PROBE_TIMEOUT_MS = 2_000

/**
 * An SQL submission unanswered after this long is given up: the connection is dropped and made
 * again, and the submission counts as refused (its commit is uncertain, so not acknowledged).
 */
const SQL_TIMEOUT_MS = 15_000

/** The notice Postgres sends when a commit stopped waiting for the synchronous replica. */
const SYNC_REP_NOTICE = /synchronous replication/i

/** Submissions get a short backoff: a lost attempt is retried in seconds, not minutes. */
const BACKOFF_BASE_SECONDS = 1

/** Starts the workload against `target`; resolves once the cron job exists (or after trying for 30 s). */
export async function startWorkload(
  target: Target,
  probes: Probes,
  options: WorkloadOptions,
): Promise<Workload> {
  const restPerSecond = options.restPerSecond ?? 5
  const sqlPerSecond = options.sqlPerSecond ?? 2
  const longEverySeconds = options.longEverySeconds ?? 10
  const longSeconds = options.longSeconds ?? 5
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000

  const start = Date.now()
  let end: number | null = null
  let stopped = false
  const acks: Ack[] = []
  const refusals: Refusal[] = []
  const marks: Mark[] = []
  const deaths: WorkerDeath[] = []
  const seconds = new Map<number, TimelineSecond>()
  const inFlight = new Set<Promise<unknown>>()
  let cronJobId: string | null = null
  let cronCreatedAt: number | null = null
  let n = 0

  const secondOf = (ms: number): TimelineSecond => {
    const s = Math.floor(ms / 1000)
    let row = seconds.get(s)
    if (!row) {
      row = { second: s, accepted: 0, refused: 0, answerMsMax: null, leader: null, primary: null }
      seconds.set(s, row)
    }
    return row
  }
  const acknowledge = (ack: Ack) => {
    acks.push(ack)
    secondOf(ack.at).accepted++
  }
  const refuse = (r: Refusal) => {
    refusals.push(r)
    secondOf(r.at).refused++
  }
  const track = <T>(p: Promise<T>): void => {
    inFlight.add(p)
    void p.finally(() => inFlight.delete(p))
  }

  /** POSTs one job; resolves to its id and times on a 201, records a refusal otherwise. */
  const restSubmit = async (
    body: Record<string, unknown>,
  ): Promise<{ id: string; at: number; sentAt: number } | null> => {
    const sentAt = Date.now()
    try {
      const res = await fetch(`${target.apiUrl}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${target.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(requestTimeoutMs),
      })
      const text = await res.text()
      const at = Date.now()
      const row = secondOf(at)
      row.answerMsMax = Math.max(row.answerMsMax ?? 0, at - sentAt)
      if (res.status === 201) {
        const id = String((JSON.parse(text) as { job_id: number | string }).job_id)
        return { id, at, sentAt }
      }
      refuse({
        via: 'rest',
        at,
        sentAt,
        status: res.status,
        ms: at - sentAt,
        error: problemOf(text),
      })
    } catch (e) {
      const at = Date.now()
      const row = secondOf(at)
      row.answerMsMax = Math.max(row.answerMsMax ?? 0, at - sentAt)
      refuse({ via: 'rest', at, sentAt, status: null, ms: at - sentAt, error: messageOf(e) })
    }
    return null
  }

  const restOne = (kind: Ack['kind']) => {
    const i = n++
    const body =
      kind === 'long'
        ? { name: `${WORKLOAD_JOB_PREFIX}long-${i}`, command: `sleep ${longSeconds}` }
        : i % 2 === 0
          ? { name: `${WORKLOAD_JOB_PREFIX}rest-${i}`, task: 'echo', payload: { i } }
          : { name: `${WORKLOAD_JOB_PREFIX}rest-${i}`, command: 'true' }
    track(
      restSubmit({
        ...body,
        backoff_base_seconds: BACKOFF_BASE_SECONDS,
        timeout_seconds: 120,
      }).then((ok) => {
        if (ok) acknowledge({ jobId: ok.id, via: 'rest', at: ok.at, sentAt: ok.sentAt, kind })
      }),
    )
  }

  // SQL submissions: one connection, one statement at a time, so a notice belongs to the
  // statement in flight. A statement that returns normally has committed (autocommit); one
  // that returns after a notice that the wait for the synchronous replica was cancelled
  // committed only locally and is not an acknowledgement.
  let notices: string[] = []
  const connect = () =>
    postgres(target.databaseUrl, {
      max: 1,
      connect_timeout: 5,
      idle_timeout: 30,
      onnotice: (notice) => notices.push(String(notice.message)),
      connection: { application_name: 'pgsched-chaos-workload' },
    })
  let sql = connect()
  let sqlBusy = false
  const sqlOne = async () => {
    if (sqlBusy) return
    sqlBusy = true
    const i = n++
    const sentAt = Date.now()
    notices = []
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      const query = sql<{ id: string }[]>`
        SELECT pgsched.submit_job(
          name => ${`${WORKLOAD_JOB_PREFIX}sql-${i}`}, task => 'echo',
          payload => ${sql.json({ i })}, backoff_base_seconds => ${BACKOFF_BASE_SECONDS},
          timeout_seconds => 120
        )::text AS id`
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer in ${SQL_TIMEOUT_MS} ms`)),
          SQL_TIMEOUT_MS,
        )
      })
      const rows = await Promise.race([query, timeout])
      const at = Date.now()
      const warning = notices.find((m) => SYNC_REP_NOTICE.test(m))
      if (warning) {
        refuse({ via: 'sql', at, sentAt, status: null, ms: at - sentAt, error: warning })
      } else {
        acknowledge({ jobId: rows[0]!.id, via: 'sql', at, sentAt, kind: 'quick' })
      }
    } catch (e) {
      const at = Date.now()
      refuse({ via: 'sql', at, sentAt, status: null, ms: at - sentAt, error: messageOf(e) })
      if (messageOf(e).startsWith('no answer')) {
        const old = sql
        sql = connect()
        void old.end({ timeout: 0 }).catch(() => {})
      }
    } finally {
      clearTimeout(timer)
      sqlBusy = false
    }
  }

  // Probes and the dead-worker watch: each sample lands in the second it was taken.
  const admin = postgres(target.adminUrl, {
    max: 1,
    connect_timeout: 5,
    idle_timeout: 30,
    onnotice: () => {},
    connection: { application_name: 'pgsched-chaos-sampler' },
  })
  const seenDead = new Set<string>()
  const sampled = new Set<number>()
  let sampling = false
  const sample = async () => {
    if (sampling) return
    sampling = true
    try {
      const [leader, primary] = await Promise.all([
        withTimeout(probes.leader()),
        withTimeout(probes.primary()),
      ])
      const now = Date.now()
      sampled.add(Math.floor(now / 1000))
      const row = secondOf(now)
      row.leader = leader
      row.primary = primary
      const dead = await withTimeout(
        admin<{ name: string; stopped_at: Date | null }[]>`
          SELECT name, stopped_at FROM pgsched.workers
          WHERE state = 'dead' AND stopped_at >= ${new Date(start)}`,
      )
      for (const d of dead ?? []) {
        const key = `${d.name}@${d.stopped_at?.getTime()}`
        if (seenDead.has(key)) continue
        seenDead.add(key)
        deaths.push({ worker: d.name, at: d.stopped_at?.getTime() ?? Date.now() })
      }
    } finally {
      sampling = false
    }
  }

  // The cron job first: its ticks are a series of the timeline from the start.
  const cronDeadline = Date.now() + 30_000
  while (!cronJobId && Date.now() < cronDeadline) {
    const ok = await restSubmit({
      name: `${WORKLOAD_JOB_PREFIX}cron`,
      task: 'echo',
      payload: { cron: true },
      schedule: '* * * * * *',
      backoff_base_seconds: BACKOFF_BASE_SECONDS,
    })
    if (ok) {
      cronJobId = ok.id
      cronCreatedAt = ok.at
    } else await new Promise((r) => setTimeout(r, 1_000))
  }

  const timers = [
    setInterval(() => restOne('quick'), 1000 / restPerSecond),
    setInterval(() => track(sqlOne()), 1000 / sqlPerSecond),
    setInterval(() => restOne('long'), longEverySeconds * 1000),
    setInterval(() => track(sample()), SAMPLE_INTERVAL_MS),
  ]
  track(sample())

  const timeline = (): Timeline => {
    const last = end ?? Date.now()
    const rows: TimelineSecond[] = []
    for (let s = Math.floor(start / 1000); s <= Math.floor(last / 1000); s++) {
      rows.push({ ...secondOf(s * 1000) })
    }
    // A second without a sample keeps the previous one's leader and primary: both are states.
    for (let i = 1; i < rows.length; i++) {
      const row = rows[i]!
      const prev = rows[i - 1]!
      if (!sampled.has(row.second)) {
        row.leader = prev.leader
        row.primary = prev.primary
      }
    }
    return {
      start,
      end: last,
      cronJobId,
      cronCreatedAt,
      seconds: rows,
      marks: [...marks],
      refusals: [...refusals],
      workerDeaths: [...deaths],
    }
  }

  return {
    mark(label) {
      marks.push({ at: Date.now(), label })
    },
    async stop() {
      if (stopped) return
      stopped = true
      for (const t of timers) clearInterval(t)
      await Promise.allSettled([...inFlight])
      end = Date.now()
      if (cronJobId) await cancelJob(target, cronJobId, requestTimeoutMs)
      await Promise.allSettled([sql.end({ timeout: 1 }), admin.end({ timeout: 1 })])
    },
    acknowledged: () => [...acks].sort((a, b) => a.at - b.at),
    timeline,
  }
}

/** Cancels job `id` over REST, trying for up to 30 s (best effort: the drill may have left the API down). */
async function cancelJob(target: Target, id: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${target.apiUrl}/v1/jobs/${id}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${target.token}` },
        signal: AbortSignal.timeout(timeoutMs),
      })
      await res.text()
      if (res.ok || res.status === 404 || res.status === 409) return
    } catch {
      // the API is away: try again
    }
    await new Promise((r) => setTimeout(r, 1_000))
  }
}

/** `p`'s value, or `null` when it fails or takes longer than the probe timeout. */
async function withTimeout<T>(p: Promise<T>): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([
      p,
      new Promise<null>((r) => {
        timer = setTimeout(() => r(null), PROBE_TIMEOUT_MS)
      }),
    ])
  } catch {
    return null
  } finally {
    clearTimeout(timer)
  }
}

/** The code (or title) of a problem+json body, else its first 100 characters. */
function problemOf(text: string): string {
  try {
    const p = JSON.parse(text) as { code?: string; title?: string; detail?: string }
    return p.code ?? p.title ?? text.slice(0, 100)
  } catch {
    return text.slice(0, 100)
  }
}

/** A short description of an error: its code and message. */
function messageOf(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: string }).code
    const cause = (e as { cause?: { code?: string } }).cause?.code
    return [code ?? cause, e.message].filter(Boolean).join(': ').slice(0, 200)
  }
  return String(e).slice(0, 200)
}
