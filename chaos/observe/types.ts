/**
 * @module
 * The types shared by the chaos drills (`chaos/drills/`, `chaos/infra/`) and the observer
 * (`chaos/observe/`): what the workload runs against, what it records, what the checks return
 * and what the report is written from. Times are milliseconds since the epoch (the local clock,
 * which is the database's too: everything runs on one machine) unless a name says seconds.
 */

/** Where the workload and the checks connect: the stack as a client sees it (through HAProxy). */
export interface Target {
  /** Base URL of the pgsched REST API, e.g. `http://127.0.0.1:8080`. */
  apiUrl: string
  /** Bearer token of a role that may submit (`pgsched token`). */
  token: string
  /** Postgres URL through HAProxy of a role that may call `pgsched.submit_job`. */
  databaseUrl: string
  /** Superuser Postgres URL through HAProxy, for the checks. */
  adminUrl: string
}

/** Who leads and who is primary, asked about twice a second; an error or nobody is `null`. */
export interface Probes {
  /** The scheduler holding leadership (e.g. from `pgsched.leader` or the processes' names). */
  leader(): Promise<string | null>
  /** The Postgres node that is primary (e.g. from Patroni's REST API). */
  primary(): Promise<string | null>
}

/** Options of `startWorkload`. */
export interface WorkloadOptions {
  /** A shortened drill: the rates stay, only the drill is shorter; kept for the record. */
  quick: boolean
  /** REST submissions started per second. @default 5 */
  restPerSecond?: number
  /** SQL submissions started per second. @default 2 */
  sqlPerSecond?: number
  /** A long command (`sleep`) is submitted over REST every this many seconds. @default 10 */
  longEverySeconds?: number
  /** How long the long commands run, in seconds. @default 5 */
  longSeconds?: number
  /** A REST request still unanswered after this long is abandoned and counted refused. @default 10000 */
  requestTimeoutMs?: number
}

/** How a submission was made. */
export type Via = 'rest' | 'sql'

/** An acknowledged submission: a 201 from the API, or a `submit_job` whose commit returned. */
export interface Ack {
  /** The job id as the API or SQL returned it (a bigint, as a string). */
  jobId: string
  via: Via
  /** When the acknowledgement arrived. */
  at: number
  /** When the request was sent. */
  sentAt: number
  /** `quick` for `true`/`echo`/a task, `long` for a `sleep`. */
  kind: 'quick' | 'long'
}

/** A submission that was not acknowledged: a non-201, a network error, a timeout, a failed or uncertain commit. */
export interface Refusal {
  via: Via
  /** When the answer (or the error) came. */
  at: number
  sentAt: number
  /** The HTTP status, or `null` when there was no answer (network error, timeout, SQL). */
  status: number | null
  /** Milliseconds from sending to the answer or error. */
  ms: number
  /** Short description: the problem title, the error code or message. */
  error: string
}

/** A labelled instant on the timeline (`fault`, `recovered`, anything a drill marks). */
export interface Mark {
  at: number
  label: string
}

/** One second of the timeline. */
export interface TimelineSecond {
  /** The second, in seconds since the epoch. */
  second: number
  /** Submissions acknowledged in this second (REST and SQL). */
  accepted: number
  /** Submissions refused or failed in this second (REST and SQL). */
  refused: number
  /** Slowest REST answer (acknowledged or not) that arrived in this second, ms; `null` if none. */
  answerMsMax: number | null
  /** Leader as last sampled in this second; `null` if none or unknown. */
  leader: string | null
  /** Primary as last sampled in this second; `null` if none or unknown. */
  primary: string | null
  /** Ticks of the workload's cron job scheduled for this second (filled in by the checks). */
  ticks?: number
  /** Runs of the workload's jobs that finished in this second (filled in by the checks). */
  runsFinished?: number
}

/** A worker the sampler saw declared dead (`pgsched.workers.state = 'dead'`), and when. */
export interface WorkerDeath {
  worker: string
  /** Its `stopped_at`: when the rescuer declared it dead. */
  at: number
}

/** What the workload recorded, second by second. */
export interface Timeline {
  /** When the workload started and stopped (stop = now while it runs). */
  start: number
  end: number
  /** The workload's `* * * * * *` cron job, when its creation succeeded. */
  cronJobId: string | null
  /** When the cron job was acknowledged. */
  cronCreatedAt: number | null
  seconds: TimelineSecond[]
  marks: Mark[]
  refusals: Refusal[]
  /** Workers declared dead while the workload ran, as sampled (a worker that comes back is active again). */
  workerDeaths: WorkerDeath[]
}

/** A running workload. */
export interface Workload {
  /** Marks the timeline now with `label` (e.g. `fault`, `recovered`). */
  mark(label: string): void
  /** Stops submitting, waits for requests in flight, cancels the cron job (best effort). */
  stop(): Promise<void>
  /** Every acknowledged submission so far, oldest first. */
  acknowledged(): Ack[]
  /** The timeline so far. */
  timeline(): Timeline
}

/** When the fault began and when the stack was recovered (the drill decides both). */
export interface Windows {
  faultStart: number
  recovered: number
}

/** Names of the checks `checkInvariants` runs. */
export type CheckName =
  | 'acknowledged-exist'
  | 'acknowledged-succeeded'
  | 'no-duplicate-tick'
  | 'no-overlapping-attempts'
  | 'cron-live-windows-fired'
  | 'cron-catch-up-once'
  | 'no-worker-dead-outside-fault'
  | 'api-answers-fast'
  | 'restore-point-respected'

/** One invariant's verdict. */
export interface Check {
  name: CheckName
  passed: boolean
  /** What was found, in a sentence an operator reads (ids listed when it failed). */
  details: string
  /** The job ids (or worker names) at fault, when it failed. */
  ids?: string[]
}

/** The measured figures of one drill; durations in ms, `null` when not applicable (nothing failed). */
export interface Figures {
  /** First refused submission → first acknowledged again. */
  rtoSubmissionsMs: number | null
  /** Last tick fired before the fault → first tick fired after it (by scheduled second). */
  rtoSchedulerMs: number | null
  /** Last run finished before the fault → first run finished after it. */
  rtoExecutionMs: number | null
  /** Acknowledged jobs lost (not in the database). */
  rpoJobsLost: number
  /** (job, scheduled_for) pairs with more than one run, plus runs that executed concurrently with themselves. */
  duplicates: number
  /** The slowest REST answer to a request sent between the fault and recovery (± margin), ms. */
  slowestAnswerDownMs: number | null
  acknowledged: number
  refused: number
  /** Cron ticks expected in the live windows, and missed within the fault window. */
  ticksMissed: number
}

/** What `checkInvariants` returns. */
export interface DrillChecks {
  passed: boolean
  checks: Check[]
  figures: Figures
  /** The workload's timeline with `ticks` and `runsFinished` filled in from the database. */
  timeline: Timeline
}

/** Options of `checkInvariants`. */
export interface CheckOptions {
  /** How long to wait for every acknowledged job's run to succeed. @default 90000 */
  succeedWithinMs?: number
  /** Margin around the fault window and the workload's edges where the cron may hesitate, ms. @default 2000 */
  marginMs?: number
  /** Workers killed on purpose: their being declared dead is expected, whenever it happens. */
  expectDead?: string[]
  /**
   * The restore drill's point in time: only acknowledgements at or before it must exist, and no
   * submission sent after it may exist (check `restore-point-respected`, run only with this set).
   */
  pointInTime?: number
  /** A REST answer slower than this is a hang (check `api-answers-fast`). @default 5000 */
  slowAnswerMs?: number
  /** Checks not to run (reported as skipped in the details). */
  skip?: CheckName[]
}

/** One drill, as the report shows it. */
export interface DrillResult {
  /** Short name, used in file names: `primary-kill`. */
  drill: string
  /** Its number in the list (1–8). */
  number: number
  /** What was done, in a sentence: `SIGKILL the Postgres primary (node1)`. */
  fault: string
  windows: Windows
  checks: DrillChecks
  /** Anything else worth reading (restore point, which jobs exist after restore, ...). */
  notes?: string[]
  /** An error that stopped the drill, when it did not run to the end. */
  error?: string
}
