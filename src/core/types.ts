/**
 * @module The words of pgsched, and the types that carry them.
 *
 * Glossary:
 * - job: a definition a user submitted: what to execute (a command or a task) and when (once,
 *   at run_at, or on a schedule), with its priority, retry policy, timeout and owner.
 * - run: one occurrence of a job, the unit of execution and history; unique per (job, scheduled_for).
 * - attempt: one execution of a run; a failed attempt is retried as the next attempt after backoff.
 * - schedule: a cron expression (5 fields, or 6 with seconds first) in an IANA time zone.
 * - tick: one instant a schedule names; each tick creates at most one run.
 * - task: a named handler registered with the worker, given the job's JSON payload.
 * - command: a shell string, executed with /bin/sh -c in its own process group.
 * - worker: a process that executes runs (through the executor).
 * - heartbeat: a worker's periodic proof of life; one silent past the timeout is declared dead.
 * - rescue: the leader retrying what a dead worker held, fenced so its late results are dropped.
 * - leader: the one scheduler process holding the advisory lock; it fires ticks.
 * - executor: Graphile Worker, which hands each attempt to exactly one worker.
 * - dependency: a job another waits for; its runs stay `waiting` until the dependency succeeds.
 * - lane: a named queue whose runs execute one at a time.
 * - degradation level: 0 normal; 1 sheds priorities 8-10, 2 caps history queries, 3 drops
 *   dependency checks, 4 refuses submissions.
 */

/** Job states. */
export const JOB_STATUSES = Object.freeze(['active', 'paused', 'completed', 'cancelled'] as const)
/** A job's state. */
export type JobStatus = (typeof JOB_STATUSES)[number]

/** Run states: `failed` will retry, `dead` will not (the dead-letter list). */
export const RUN_STATUSES = Object.freeze([
  'waiting',
  'queued',
  'running',
  'succeeded',
  'failed',
  'dead',
  'cancelled',
  'skipped',
] as const)
/** A run's state. */
export type RunStatus = (typeof RUN_STATUSES)[number]

/**
 * How an attempt ended. `lost`: its worker died or stopped answering, and the leader rescued the
 * run. `interrupted`: its worker shut down and handed it back for an immediate retry.
 */
export const ATTEMPT_OUTCOMES = Object.freeze([
  'running',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'lost',
  'interrupted',
] as const)
/** An attempt's outcome. */
type AttemptOutcome = (typeof ATTEMPT_OUTCOMES)[number]

/** Worker states: `stopping` while it drains on shutdown; `dead` when the leader declared it lost. */
export const WORKER_STATES = Object.freeze(['active', 'stopping', 'stopped', 'dead'] as const)
/** A worker's state. */
export type WorkerState = (typeof WORKER_STATES)[number]

/** Roles carried in a token's `roles` claim. */
export const ROLES = Object.freeze(['admin', 'submitter', 'viewer'] as const)
/** A role. */
export type Role = (typeof ROLES)[number]

/** The authenticated caller. */
export interface Principal {
  sub: string
  roles: readonly Role[]
}

/** What a recurring job's tick does while its previous run is unfinished (as Kubernetes CronJobs). */
export const CONCURRENCY_POLICIES = Object.freeze(['allow', 'forbid', 'replace'] as const)
/** A concurrency policy. */
export type ConcurrencyPolicy = (typeof CONCURRENCY_POLICIES)[number]

/** A job as the API shows it. */
export interface Job {
  job_id: number
  owner: string
  name: string
  kind: 'command' | 'task'
  command: string | null
  task: string | null
  payload: unknown
  schedule: string | null
  timezone: string
  next_run: Date | null
  priority: number
  max_retries: number
  backoff_base_seconds: number
  timeout_seconds: number
  queue: string | null
  status: JobStatus
  /** Jobs that must succeed before this one's runs start. */
  depends_on: number[]
  concurrency_policy: ConcurrencyPolicy
  /** The limits the job asked for; absent fields take the worker's defaults. */
  limits: JobLimits
  /** Whether a command job may reach the network. */
  network: boolean
  created_at: Date
  updated_at: Date
}

/**
 * How a worker isolates command jobs: `bwrap` (namespaces, unprivileged uid, limits), `rlimits`
 * (unprivileged uid, scratch folder and limits, no namespaces: resource-limited, not isolated) or
 * `none` (trusted single-user development only).
 */
export const SANDBOX_MODES = ['bwrap', 'rlimits', 'none'] as const
/** @see SANDBOX_MODES */
export type SandboxMode = (typeof SANDBOX_MODES)[number]

/** Resource limits of a command job; an absent field takes the worker's default. */
export interface JobLimits {
  /** Memory of the whole job (every process), MiB. */
  memory_mb?: number
  /** CPU time of each process, seconds. */
  cpu_seconds?: number
  /** Processes (and threads) the job may have at once. */
  max_processes?: number
  /** Largest file the job may write, MiB. */
  file_size_mb?: number
  /** Open file descriptors per process. */
  open_files?: number
}

/** The fields of JobLimits, in a fixed order. */
export const JOB_LIMIT_FIELDS = [
  'memory_mb',
  'cpu_seconds',
  'max_processes',
  'file_size_mb',
  'open_files',
] as const satisfies readonly (keyof JobLimits)[]

/** One attempt of a run. */
export interface Attempt {
  attempt: number
  worker: string
  started_at: Date
  finished_at: Date | null
  outcome: AttemptOutcome
  exit_code: number | null
  error: string | null
  /** How the worker isolated this command attempt (a SandboxMode, or why it could not); null for a task. */
  sandbox: string | null
}

/** A run as the API shows it. */
export interface Run {
  run_id: number
  job_id: number
  job_name: string
  status: RunStatus
  attempt: number
  scheduled_for: Date
  available_at: Date
  started_at: Date | null
  finished_at: Date | null
  worker: string | null
  exit_code: number | null
  output: string | null
  error: string | null
  created_at: Date
}

/** A worker process as the API shows it. */
export interface WorkerInfo {
  name: string
  host: string
  pid: number
  concurrency: number
  /** Runs in hand at the last heartbeat. */
  running: number
  state: WorkerState
  started_at: Date
  heartbeat_at: Date
  /** Seconds since the last heartbeat, by the database clock. */
  heartbeat_age_seconds: number
  stopped_at: Date | null
  error: string | null
  /** How it isolates command jobs, or why it refuses them. */
  sandbox: string | null
}

/** The scheduler leadership as the API shows it. */
export interface SchedulerInfo {
  /** The last elected leader, or null before any election. */
  leader: string | null
  term: number | null
  /** When the leader took over. */
  since: Date | null
  /** Whether that leader still holds the lock now (false: an election is due). */
  leading: boolean
}

/** Degradation as the API shows it: level 0 is normal, 1-4 shed load in the design's order. */
export interface Degradation {
  mode: 'auto' | 'manual'
  level: number
  cause: string
  changed_at: Date
  warn_queue_depth: number
  critical_queue_depth: number
  queue_depth: number | null
  measured_at: Date | null
  resolver_fallbacks: number
}

/** Minimal structured logger; pino's logger satisfies it. */
export interface Logger {
  debug(obj: object | string, msg?: string): void
  info(obj: object | string, msg?: string): void
  warn(obj: object | string, msg?: string): void
  error(obj: object | string, msg?: string): void
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = Object.freeze({
  debug() {},
  info() {},
  warn() {},
  error() {},
})
