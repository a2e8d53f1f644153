/** @module Queries on pgsched.jobs. The only runtime SQL for jobs; each takes `sql` first. */
import { type DueJob, planJob, type TickPlan } from '../../core/cron.ts'
import { SUBMISSION_DEFAULTS as S } from '../../core/submission-defaults.ts'
import type { ConcurrencyPolicy, Job, JobLimits, JobStatus } from '../../core/types.ts'
import type { Sql } from '../client.ts'

/** What a submission carries; mirrors the arguments of pgsched.submit_job. */
export interface JobSubmission {
  name: string
  command?: string | null
  task?: string | null
  payload?: unknown
  schedule?: string | null
  timezone?: string | null
  run_at?: Date | null
  priority?: number
  max_retries?: number
  backoff_base_seconds?: number
  timeout_seconds?: number
  queue?: string | null
  idempotency_key?: string | null
  /** Ids of jobs that must succeed first; in a batch also refs of other jobs of the batch. */
  depends_on?: (number | string)[]
  concurrency_policy?: ConcurrencyPolicy
  /** Resource limits of a command job, within the admin's ceilings. */
  limits?: JobLimits
  /** Whether a command job may reach the network. */
  network?: boolean
}

/** One job of a batch, as JSON: a submission with an optional local name for depends_on. */
type BatchJob = Omit<JobSubmission, 'run_at'> & { run_at?: string; ref?: string }

// next_run: a schedule's next tick, or a one-off job's pending occurrence.
const jobColumns = (sql: Sql) => sql`
  j.id AS job_id, j.owner, j.name, j.kind, j.command, j.task, j.payload, j.schedule, j.timezone,
  CASE WHEN j.schedule IS NOT NULL THEN j.next_run_at
       ELSE (SELECT min(r.scheduled_for) FROM pgsched.runs r
             WHERE r.job_id = j.id AND r.status IN ('waiting', 'queued')) END AS next_run,
  j.priority, j.max_retries, j.backoff_base_seconds, j.timeout_seconds, j.queue, j.status,
  ARRAY(SELECT d.depends_on FROM pgsched.job_dependencies d WHERE d.job_id = j.id
        ORDER BY d.depends_on) AS depends_on,
  j.concurrency_policy, j.limits, j.network, j.created_at, j.updated_at`

/**
 * Submits a job through pgsched.submit_job, the SQL API's own function, so REST and SQL share
 * one implementation. `created` is false when the idempotency key returned an earlier job.
 */
export async function jobSubmit(
  sql: Sql,
  s: JobSubmission,
  owner: string,
  traceparent: string | null,
): Promise<{ job: Job; created: boolean }> {
  const [submitted] = await sql<{ id: number }[]>`
    SELECT pgsched.submit_job(
      name => ${s.name},
      command => ${s.command ?? null},
      task => ${s.task ?? null},
      payload => ${s.payload === undefined ? null : sql.json(s.payload as never)}::jsonb,
      schedule => ${s.schedule ?? null},
      timezone => ${s.timezone ?? S.timezone},
      run_at => ${s.run_at ?? null}::timestamptz,
      priority => ${s.priority ?? S.priority.default}::integer,
      max_retries => ${s.max_retries ?? S.max_retries.default}::integer,
      backoff_base_seconds => ${s.backoff_base_seconds ?? S.backoff_base_seconds.default}::integer,
      timeout_seconds => ${s.timeout_seconds ?? S.timeout_seconds.default}::integer,
      queue => ${s.queue ?? null},
      idempotency_key => ${s.idempotency_key ?? null},
      owner => ${owner},
      traceparent => ${traceparent},
      depends_on => ${(s.depends_on ?? []).map(Number)}::bigint[],
      concurrency_policy => ${s.concurrency_policy ?? S.concurrency_policy},
      limits => ${sql.json((s.limits ?? {}) as never)}::jsonb,
      network => ${s.network ?? S.network}::boolean
    ) AS id`
  // A job created by this transaction carries its start time; an idempotent replay is older.
  const [row] = await sql<(Job & { created: boolean })[]>`
    SELECT ${jobColumns(sql)}, j.created_at = now() AS created
    FROM pgsched.jobs j WHERE j.id = ${submitted!.id}`
  const { created, ...job } = row!
  return { job, created }
}

/**
 * Submits a batch through pgsched.submit_jobs: all or nothing, in one call. Returns the jobs in
 * the order given, each flagged `created` (false: an idempotency key returned an earlier job).
 */
export async function jobSubmitBatch(
  sql: Sql,
  jobs: readonly BatchJob[],
  owner: string,
  traceparent: string | null,
): Promise<{ job: Job; created: boolean; ref: string | null }[]> {
  const submitted = await sql<{ ref: string | null; job_id: number }[]>`
    SELECT ref, job_id FROM pgsched.submit_jobs(
      ${sql.json(jobs as never)}::jsonb, owner => ${owner}, traceparent => ${traceparent})`
  const rows = await sql<(Job & { created: boolean })[]>`
    SELECT ${jobColumns(sql)}, j.created_at = now() AS created
    FROM pgsched.jobs j WHERE j.id = ANY (${submitted.map((s) => s.job_id)}::bigint[])`
  const byId = new Map(rows.map(({ created, ...job }) => [job.job_id, { job, created }]))
  return submitted.map((s) => ({ ...byId.get(s.job_id)!, ref: s.ref }))
}

/** One job by id, or undefined. */
export async function jobGet(sql: Sql, id: number): Promise<Job | undefined> {
  const [job] = await sql<Job[]>`SELECT ${jobColumns(sql)} FROM pgsched.jobs j WHERE j.id = ${id}`
  return job
}

/** Filters for jobList; `owner` undefined lists every owner's jobs. */
interface JobListFilter {
  owner?: string
  status?: JobStatus
  name?: string
  /** List jobs with ids below this one (newest first). */
  before?: number
  /** Only jobs created after this instant. */
  since?: Date
  limit: number
}

/** Jobs, newest first, one page. */
export async function jobList(sql: Sql, f: JobListFilter): Promise<Job[]> {
  return sql<Job[]>`
    SELECT ${jobColumns(sql)} FROM pgsched.jobs j
    WHERE true
      ${f.owner === undefined ? sql`` : sql`AND j.owner = ${f.owner}`}
      ${f.status === undefined ? sql`` : sql`AND j.status = ${f.status}`}
      ${f.name === undefined ? sql`` : sql`AND j.name = ${f.name}`}
      ${f.before === undefined ? sql`` : sql`AND j.id < ${f.before}`}
      ${f.since === undefined ? sql`` : sql`AND j.created_at > ${f.since}`}
    ORDER BY j.id DESC
    LIMIT ${f.limit}`
}

/** Cancels a job through pgsched.cancel_job. False when it had already ended. */
export async function jobCancel(sql: Sql, id: number): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`SELECT pgsched.cancel_job(${id}) AS ok`
  return row!.ok
}

/** Pauses an active job. False when it was not active. */
export async function jobPause(sql: Sql, id: number): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`SELECT pgsched.pause_job(${id}) AS ok`
  return row!.ok
}

/** Resumes a paused job. False when it was not paused. */
export async function jobResume(sql: Sql, id: number): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`SELECT pgsched.resume_job(${id}) AS ok`
  return row!.ok
}

/** Changes a job's priority, including the runs it has queued. */
export async function jobSetPriority(sql: Sql, id: number, priority: number): Promise<void> {
  await sql`
    WITH job AS (
      UPDATE pgsched.jobs SET priority = ${priority}, updated_at = now() WHERE id = ${id} RETURNING id
    )
    SELECT graphile_worker.reschedule_jobs(array_agg(g.id), priority => ${priority}::integer)
    FROM pgsched.runs r JOIN job ON r.job_id = job.id
    JOIN graphile_worker._private_jobs g ON g.key = pgsched._executor_job_key(r.id)
    WHERE r.status IN ('queued', 'failed')
    HAVING count(*) > 0`
}

/** Replaces a scheduled job's schedule (pgsched.set_job_schedule); false if it has none. */
export async function jobSetSchedule(
  sql: Sql,
  id: number,
  schedule: string,
  timezone: string,
): Promise<boolean> {
  const [row] = await sql<
    { ok: boolean }[]
  >`SELECT pgsched.set_job_schedule(${id}, ${schedule}, ${timezone}) AS ok`
  return row!.ok
}

/** Creates a run of the job now (pgsched.trigger_job); returns the run id. */
export async function jobTrigger(sql: Sql, id: number): Promise<number> {
  const [row] = await sql<{ run_id: number }[]>`SELECT pgsched.trigger_job(${id}) AS run_id`
  return row!.run_id
}

const dueColumns = (sql: Sql, now: Date | null = null) =>
  sql`id, schedule, timezone, schedule_base_at, next_run_at, queue, traceparent,
    coalesce(${now}::timestamptz, now()) AS now`

/** A due job with what the ticker's telemetry needs besides the plan. */
export interface DueTickJob extends DueJob {
  queue: string | null
  /** The traceparent stored with the job at submission, which a tick's span links to. */
  traceparent: string | null
}

/**
 * Locks up to `limit` scheduled jobs that need planning (no next_run_at yet) or whose tick is
 * due by `now` (default: now()). SKIP LOCKED lets a second scheduler pass over rows the first is
 * firing. Call in a transaction.
 */
export async function jobListDue(sql: Sql, limit: number, now?: Date): Promise<DueTickJob[]> {
  return sql<DueTickJob[]>`
    SELECT ${dueColumns(sql, now)}
    FROM pgsched.jobs
    WHERE status = 'active' AND schedule IS NOT NULL
      AND (next_run_at IS NULL OR next_run_at <= coalesce(${now ?? null}::timestamptz, now()))
    ORDER BY next_run_at NULLS FIRST
    LIMIT ${limit}
    FOR UPDATE SKIP LOCKED`
}

/** Locks one active scheduled job whose first tick is not planned yet; undefined otherwise. */
async function jobGetUnplanned(sql: Sql, id: number): Promise<DueJob | undefined> {
  const [job] = await sql<DueJob[]>`
    SELECT ${dueColumns(sql)}
    FROM pgsched.jobs
    WHERE id = ${id} AND status = 'active' AND schedule IS NOT NULL AND next_run_at IS NULL
    FOR UPDATE`
  return job
}

/**
 * Applies planned ticks with pgsched.fire_ticks; returns the number of runs created.
 * `traceparents` (aligned with `plans`, when tracing) are the ticks' own spans, stored on their
 * runs; without them runs store their job's traceparent.
 */
export async function jobFireTicks(
  sql: Sql,
  plans: readonly TickPlan[],
  traceparents?: readonly (string | null)[],
): Promise<number> {
  if (plans.length === 0) return 0
  const [row] = await sql<{ created: number }[]>`
    SELECT pgsched.fire_ticks(
      ${plans.map((p) => p.jobId)}::bigint[],
      ${plans.map((p) => p.expected?.toISOString() ?? null)}::timestamptz[],
      ${plans.map((p) => p.tick?.toISOString() ?? null)}::timestamptz[],
      ${plans.map((p) => p.next.toISOString())}::timestamptz[],
      ${traceparents ? [...traceparents] : null}::text[]
    ) AS created`
  return row!.created
}

/**
 * The runs of fired ticks, found by (job, tick) through the runs' unique key, with the
 * traceparent each stored: the ticker's spans learn their run id from it (tracing only).
 */
export async function jobTickRuns(
  sql: Sql,
  ticks: readonly { jobId: number; tick: Date }[],
): Promise<{ job_id: number; run_id: number; traceparent: string | null }[]> {
  if (ticks.length === 0) return []
  return sql`
    SELECT r.job_id, r.id AS run_id, r.traceparent
    FROM unnest(${ticks.map((t) => t.jobId)}::bigint[],
      ${ticks.map((t) => t.tick.toISOString())}::timestamptz[]) AS u(job_id, tick)
    JOIN pgsched.runs r ON r.job_id = u.job_id AND r.scheduled_for = u.tick`
}

/**
 * Plans the first tick of a job whose schedule was just set or resumed, in the caller's
 * transaction, so a REST caller sees next_run at once. It computes exactly what the leader
 * would (the first tick after schedule_base_at); whichever writes first wins, the other no-ops.
 */
export async function jobPlanIfUnplanned(sql: Sql, jobId: number): Promise<void> {
  const job = await jobGetUnplanned(sql, jobId)
  if (job) await jobFireTicks(sql, [planJob(job)])
}

/** Milliseconds until the earliest planned tick, null when no schedule is active. */
export async function jobNextDueInMs(sql: Sql): Promise<number | null> {
  const [row] = await sql<{ ms: number | null }[]>`
    SELECT CASE WHEN bool_or(next_run_at IS NULL) THEN 0
      ELSE extract(epoch FROM min(next_run_at) - now()) * 1000 END::float8 AS ms
    FROM pgsched.jobs WHERE status = 'active' AND schedule IS NOT NULL`
  // No active schedule gives NULL; greatest(0, NULL) in SQL would give 0 (it skips NULLs), and
  // the ticker would then pass again at once, forever.
  return row!.ms === null ? null : Math.max(0, row!.ms)
}
