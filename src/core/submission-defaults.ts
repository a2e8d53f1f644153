/**
 * @module The defaults and limits of a job submission, in one table. The REST request schemas
 * (api/schemas.ts) and the submit query (db/queries/jobs.ts) read them from here. The SQL
 * functions of the public SQL API check every submission again and are the authority; they keep
 * their own copy of these values (a parameter's DEFAULT, a CHECK), so a change here must be
 * made there too; test/submission-defaults.test.ts fails until it is.
 */
import type { ConcurrencyPolicy, JobLimits } from './types.ts'

/** A whole-number field of a submission: its range, inclusive, and its value when not given. */
interface IntField {
  readonly default: number
  readonly min: number
  readonly max: number
}

/** Defaults and limits of a submission (POST /v1/jobs, each job of a batch, pgsched.submit_job). */
export const SUBMISSION_DEFAULTS = Object.freeze({
  /** Priority of the job's runs: 1 is the most urgent. */
  priority: Object.freeze({ default: 5, min: 1, max: 10 } satisfies IntField),
  /** How often a failed run is tried again. */
  max_retries: Object.freeze({ default: 3, min: 0, max: 100 } satisfies IntField),
  /** Base of the exponential backoff between tries, in seconds (one day at most). */
  backoff_base_seconds: Object.freeze({ default: 60, min: 0, max: 86_400 } satisfies IntField),
  /** How long one attempt may run before it is stopped, in seconds (seven days at most). */
  timeout_seconds: Object.freeze({ default: 3600, min: 1, max: 604_800 } satisfies IntField),
  /** The IANA time zone a schedule is read in when none is given. */
  timezone: 'UTC',
  /** What a recurring job's tick does while its previous run is unfinished. */
  concurrency_policy: 'allow' as ConcurrencyPolicy,
  /** Whether a command job may reach the network. */
  network: false,
  /** Longest job name, in characters (after trimming it must not be empty). */
  name_max_length: 200,
  /** Longest shell command, in characters. */
  command_max_length: 100_000,
  /** Longest cron schedule, in characters. */
  schedule_max_length: 200,
  /** Longest time zone name, in characters. */
  timezone_max_length: 100,
  /** Longest task or queue name, in characters (letters, digits, _ . : -). */
  lane_name_max_length: 100,
  /** Longest idempotency key, in characters. */
  idempotency_key_max_length: 200,
  /** Longest ref (a job's name within its batch), in characters. */
  ref_max_length: 100,
  /** Most jobs one job may depend on. */
  depends_on_max: 100,
  /** Most jobs one batch may hold. */
  batch_max_jobs: 1000,
  /** Deepest nesting of arrays and objects in a task payload. */
  payload_max_depth: 32,
  /** Largest task payload, in bytes of UTF-8 JSON text. */
  payload_max_bytes: 256 * 1024,
  /** Earliest time a submission may give (run_at); Postgres stores earlier ones, pgsched has no use for them. */
  time_min: '1970-01-01T00:00:00Z',
  /** Latest time a submission may give: the last with a four-digit year. */
  time_max: '9999-12-31T23:59:59.999Z',
  /** The smallest value of each job limit: below these a shell cannot start. */
  limit_floors: Object.freeze({
    memory_mb: 16,
    cpu_seconds: 1,
    max_processes: 1,
    file_size_mb: 1,
    open_files: 16,
  } satisfies Required<JobLimits>),
  /**
   * The largest value of each job limit a request may give, whatever the ceilings: a bound on
   * the request alone, the admin's ceilings (checked by the SQL functions) are usually lower.
   */
  limit_max: Object.freeze({
    memory_mb: 1_000_000,
    cpu_seconds: 1_000_000,
    max_processes: 100_000,
    file_size_mb: 1_000_000,
    open_files: 1_000_000,
  } satisfies Required<JobLimits>),
  /** The highest ceiling an admin may set on a job limit. */
  limit_ceiling_max: 1_000_000_000,
})
