/** @module Queries on pgsched.settings: the SQL API's own settings (job limit ceilings). */
import type { JobLimits } from '../../core/types.ts'
import type { Sql } from '../client.ts'

/** The ceilings on what a submission's limits may ask for, and who may ask for network. */
export interface JobLimitCeilings {
  job_limit_ceilings: Required<JobLimits>
  /** Whether sessions that act only for themselves (SQL submitters) may ask for network. */
  job_network_allowed: boolean
}

/** The current ceilings. */
export async function settingsJobLimits(sql: Sql): Promise<JobLimitCeilings> {
  const [row] = await sql<JobLimitCeilings[]>`
    SELECT job_limit_ceilings, job_network_allowed FROM pgsched.settings`
  return row!
}

/** Changes the ceilings given (pgsched.set_job_limit_ceilings); returns them all. */
export async function settingsSetJobLimits(
  sql: Sql,
  ceilings: JobLimits,
  networkAllowed: boolean | undefined,
): Promise<JobLimitCeilings> {
  const [row] = await sql<JobLimitCeilings[]>`
    SELECT * FROM pgsched.set_job_limit_ceilings(
      ${sql.json(ceilings as never)}::jsonb, ${networkAllowed ?? null}::boolean)`
  return row!
}
