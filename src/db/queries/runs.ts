/** @module Queries on pgsched.runs and its attempts. The only runtime SQL for runs. */
import type { Attempt, JobLimits, Run } from '../../core/types.ts'
import type { Sql } from '../client.ts'

const runColumns = (sql: Sql) => sql`
  r.id AS run_id, r.job_id, j.name AS job_name, r.status, r.attempt, r.scheduled_for,
  r.available_at, r.started_at, r.finished_at, r.worker, r.exit_code, r.output, r.error, r.created_at`

/**
 * A run with its owner, for authorization, and the W3C traceparent its attempts continue or link
 * to (the submitter's; null when it was submitted untraced).
 */
type OwnedRun = Run & { owner: string; traceparent: string | null }

/** One run by id with its owner, or undefined. */
export async function runGet(sql: Sql, id: number): Promise<OwnedRun | undefined> {
  // The traceparent run_start_many hands the worker.
  const [run] = await sql<OwnedRun[]>`
    SELECT ${runColumns(sql)}, j.owner, coalesce(r.traceparent, j.traceparent) AS traceparent
    FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.id = ${id}`
  return run
}

/** The attempts of a run, oldest first. */
export async function runAttempts(sql: Sql, runId: number): Promise<Attempt[]> {
  return sql<Attempt[]>`
    SELECT attempt, worker, started_at, finished_at, outcome, exit_code, error, sandbox
    FROM pgsched.run_attempts WHERE run_id = ${runId} ORDER BY attempt`
}

/** Runs of one job, newest first, one page; `since` keeps runs created after it. */
export async function runListForJob(
  sql: Sql,
  jobId: number,
  f: { limit: number; before?: number; since?: Date },
): Promise<Run[]> {
  return sql<Run[]>`
    SELECT ${runColumns(sql)}
    FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.job_id = ${jobId}
      ${f.before === undefined ? sql`` : sql`AND r.id < ${f.before}`}
      ${f.since === undefined ? sql`` : sql`AND r.created_at > ${f.since}`}
    ORDER BY r.id DESC LIMIT ${f.limit}`
}

/** Dead-lettered runs, newest first; `owner` undefined lists every owner's. */
export async function runListDead(
  sql: Sql,
  f: { owner?: string; limit: number; before?: number; since?: Date },
): Promise<Run[]> {
  return sql<Run[]>`
    SELECT ${runColumns(sql)}
    FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.status = 'dead'
      ${f.owner === undefined ? sql`` : sql`AND j.owner = ${f.owner}`}
      ${f.before === undefined ? sql`` : sql`AND r.id < ${f.before}`}
      ${f.since === undefined ? sql`` : sql`AND r.created_at > ${f.since}`}
    ORDER BY r.id DESC LIMIT ${f.limit}`
}

/** Replays a dead run (pgsched.retry_run). False unless it was dead. */
export async function runRetryDead(sql: Sql, id: number): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`SELECT pgsched.retry_run(${id}) AS ok`
  return row!.ok
}

/** What a worker needs to execute an attempt. */
export interface StartedRun {
  run_id: number
  job_id: number
  attempt: number
  kind: 'command' | 'task'
  command: string | null
  task: string | null
  payload: unknown
  timeout_seconds: number
  traceparent: string | null
  /** A command's limits as submitted; absent fields take the worker's defaults. */
  limits: JobLimits
  /** Whether a command may reach the network. */
  network: boolean
  /** The job's queue (its lane); null: none. */
  queue: string | null
  priority: number
  /** When this attempt became due; its queue wait is started_at minus this. */
  available_at: Date
  /** When this attempt started, by the database clock. */
  started_at: Date
}

/** An attempt a worker asks to start or to record. */
export interface AttemptRef {
  run_id: number
  attempt: number
}

/**
 * Marks attempts running on `worker` (pgsched.run_start_many), in one statement; one answer per
 * attempt, in order: undefined where it is not current.
 */
export async function runStartMany(
  sql: Sql,
  attempts: AttemptRef[],
  worker: string,
): Promise<(StartedRun | undefined)[]> {
  const rows = await sql<StartedRun[]>`
    SELECT * FROM pgsched.run_start_many(
      ${attempts.map((a) => a.run_id)}::bigint[], ${attempts.map((a) => a.attempt)}::integer[],
      ${worker})`
  const byRun = new Map(rows.map((r) => [r.run_id, r]))
  return attempts.map((a) => byRun.get(a.run_id))
}

/** An executor job claimed by run_claim_many: Graphile Worker's row, and the run it started. */
export interface ClaimedJob {
  /** Graphile Worker's job row (id, payload, attempts, task_identifier, …). */
  job: Record<string, unknown>
  /** The started attempt; undefined where it is no longer current. */
  started: StartedRun | undefined
}

/**
 * Claims up to `count` executor jobs for Graphile Worker pool `pool` and starts their runs on
 * `worker` (pgsched.run_claim_many), in one statement; most urgent first.
 */
export async function runClaimMany(
  sql: Sql,
  pool: string,
  count: number,
  flagsToSkip: string[] | null,
  worker: string,
): Promise<ClaimedJob[]> {
  const rows = await sql<{ job: Record<string, unknown>; started: StartedRun | null }[]>`
    SELECT job, started FROM pgsched.run_claim_many(${pool}, ${count}, ${flagsToSkip}::text[], ${worker})`
  return rows.map(({ job, started }) => ({
    job,
    // jsonb carries timestamps as text.
    started: started
      ? {
          ...started,
          available_at: new Date(started.available_at),
          started_at: new Date(started.started_at),
        }
      : undefined,
  }))
}

/** Marks one attempt running on `worker`: a group of one. */
export async function runStart(
  sql: Sql,
  runId: number,
  attempt: number,
  worker: string,
): Promise<StartedRun | undefined> {
  return (await runStartMany(sql, [{ run_id: runId, attempt }], worker))[0]
}

/** The result of an attempt, as a worker reports it. */
export interface AttemptResult {
  outcome: 'succeeded' | 'failed' | 'timed_out' | 'cancelled' | 'interrupted'
  exitCode: number | null
  output: string | null
  error: string | null
}

/**
 * Records attempts' results (pgsched.run_finish_many), in one statement: finish, retry after
 * backoff, or dead-letter. One answer per attempt, in order: the run's new status, or null when
 * the attempt was no longer current.
 */
export async function runFinishMany(
  sql: Sql,
  results: { run: AttemptRef; result: AttemptResult }[],
  worker: string,
): Promise<(string | null)[]> {
  // Unnested: postgres.js reads a NULL element of a text[] as the string 'NULL'.
  const rows = await sql<{ status: string | null }[]>`
    SELECT u.status FROM unnest(pgsched.run_finish_many(
      ${results.map((r) => r.run.run_id)}::bigint[], ${results.map((r) => r.run.attempt)}::integer[],
      ${worker}, ${results.map((r) => r.result.outcome)}::text[],
      ${results.map((r) => r.result.exitCode)}::integer[], ${results.map((r) => r.result.output)}::text[],
      ${results.map((r) => r.result.error)}::text[])) WITH ORDINALITY AS u (status, i)
    ORDER BY u.i`
  return rows.map((r) => r.status)
}

/** Records one attempt's result: a group of one. */
export async function runFinish(
  sql: Sql,
  runId: number,
  attempt: number,
  worker: string,
  result: AttemptResult,
): Promise<string | null> {
  return (await runFinishMany(sql, [{ run: { run_id: runId, attempt }, result }], worker))[0]!
}

/** The queue of each run (null for none), by run id. */
export async function runQueues(sql: Sql, ids: number[]): Promise<Map<number, string | null>> {
  const rows = await sql<{ id: string; queue: string | null }[]>`
    SELECT r.id, j.queue FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.id = ANY (${ids}::bigint[])`
  return new Map(rows.map((r) => [Number(r.id), r.queue]))
}
