/** @module Queries on pgsched.runs and its attempts. The only runtime SQL for runs. */
import type { Attempt, Run } from '../../core/types.ts'
import type { Sql } from '../client.ts'

const runColumns = (sql: Sql) => sql`
  r.id AS run_id, r.job_id, j.name AS job_name, r.status, r.attempt, r.scheduled_for,
  r.available_at, r.started_at, r.finished_at, r.worker, r.exit_code, r.output, r.error, r.created_at`

/** A run with its owner, for authorization. */
export type OwnedRun = Run & { owner: string }

/** One run by id with its owner, or undefined. */
export async function runGet(sql: Sql, id: number): Promise<OwnedRun | undefined> {
  const [run] = await sql<OwnedRun[]>`
    SELECT ${runColumns(sql)}, j.owner
    FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.id = ${id}`
  return run
}

/** The attempts of a run, oldest first. */
export async function runAttempts(sql: Sql, runId: number): Promise<Attempt[]> {
  return sql<Attempt[]>`
    SELECT attempt, worker, started_at, finished_at, outcome, exit_code, error
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
}

/** Marks an attempt running on `worker` (pgsched.run_start); undefined when it is not current. */
export async function runStart(
  sql: Sql,
  runId: number,
  attempt: number,
  worker: string,
): Promise<StartedRun | undefined> {
  const [run] = await sql<
    StartedRun[]
  >`SELECT * FROM pgsched.run_start(${runId}, ${attempt}, ${worker})`
  return run
}

/** The result of an attempt, as a worker reports it. */
export interface AttemptResult {
  outcome: 'succeeded' | 'failed' | 'timed_out' | 'cancelled' | 'interrupted'
  exitCode: number | null
  output: string | null
  error: string | null
}

/**
 * Records an attempt's result (pgsched.run_finish): finish, retry after backoff, or dead-letter.
 * Returns the run's new status, or null when the attempt was no longer current.
 */
export async function runFinish(
  sql: Sql,
  runId: number,
  attempt: number,
  worker: string,
  r: AttemptResult,
): Promise<string | null> {
  const [row] = await sql<{ status: string | null }[]>`
    SELECT pgsched.run_finish(${runId}, ${attempt}, ${worker}, ${r.outcome},
      ${r.exitCode}::integer, ${r.output}, ${r.error}) AS status`
  return row!.status
}
