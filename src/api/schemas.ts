/**
 * @module Request and response schemas of the REST API (zod). The SQL functions validate again
 * and are the authority; these shape the requests and the OpenAPI document.
 */
import { z } from 'zod'

import { JOB_LIMITS_DEFAULT } from '../core/config.ts'
// S for short: the limits below are read from the one table of them.
import { SUBMISSION_DEFAULTS as S } from '../core/submission-defaults.ts'
import {
  ATTEMPT_OUTCOMES,
  CONCURRENCY_POLICIES,
  JOB_STATUSES,
  type JobLimits,
  RUN_STATUSES,
  SANDBOX_MODES,
  WORKER_STATES,
} from '../core/types.ts'

const laneName = z
  .string()
  .regex(
    new RegExp(`^[A-Za-z0-9_.:-]{1,${S.lane_name_max_length}}$`),
    `must be 1-${S.lane_name_max_length} characters of letters, digits, _ . : -`,
  )

const jobId = z.int().min(1).max(Number.MAX_SAFE_INTEGER)

/**
 * Why a string cannot be stored as Postgres text, or undefined: Postgres refuses NUL, and an
 * unpaired UTF-16 surrogate has no UTF-8 form (in JSON it fails as jsonb).
 */
function textProblem(s: string): string | undefined {
  if (s.includes('\u0000')) return 'must not contain NUL characters (\\u0000)'
  if (!s.isWellFormed()) return 'must be valid Unicode (it has an unpaired surrogate)'
  return undefined
}

/**
 * Why `value` is not a task payload pgsched can store, or undefined: nested deeper than
 * payload_max_depth, holding what JSON cannot (a bigint, Infinity) or Postgres cannot (NUL), or
 * larger than payload_max_bytes (core/submission-defaults.ts). The walk is iterative, so no depth exhausts the stack, and the
 * depth is checked before anything serializes the value (JSON.stringify recurses).
 */
export function payloadProblem(value: unknown): string | undefined {
  const todo: [unknown, number][] = [[value, 0]]
  let seen = 0
  while (todo.length > 0) {
    const [v, depth] = todo.pop()!
    // Each value takes a byte of JSON at least; this also bounds a value that shares parts.
    if (++seen > S.payload_max_bytes) return `is larger than ${S.payload_max_bytes} bytes of JSON`
    if (v === null || typeof v === 'boolean') continue
    if (typeof v === 'string') {
      const problem = textProblem(v)
      if (problem) return `has a string that ${problem}`
      continue
    }
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return 'has a number JSON cannot hold'
      continue
    }
    if (typeof v !== 'object') return `has a value JSON cannot hold (${typeof v})`
    if (depth >= S.payload_max_depth) return `is nested deeper than ${S.payload_max_depth} levels`
    if (Array.isArray(v)) {
      for (const e of v) todo.push([e, depth + 1])
      continue
    }
    const proto = Object.getPrototypeOf(v)
    if (proto !== Object.prototype && proto !== null) return 'has a value JSON cannot hold'
    for (const [k, e] of Object.entries(v)) {
      const problem = textProblem(k)
      if (problem) return `has a key that ${problem}`
      todo.push([e, depth + 1])
    }
  }
  const bytes = new TextEncoder().encode(JSON.stringify(value)).length
  if (bytes > S.payload_max_bytes)
    return `is larger than ${S.payload_max_bytes} bytes of JSON (${bytes})`
  return undefined
}

// A string Postgres can store as text (see textProblem).
function storable<T extends z.ZodString>(schema: T): T {
  return schema.superRefine((s, ctx) => {
    const message = textProblem(s)
    if (message) ctx.addIssue({ code: 'custom', message })
  }) as T
}

// A time in requests: ISO 8601 with an offset, between time_min and time_max.
const requestTime = z.iso.datetime({ offset: true }).superRefine((s, ctx) => {
  const t = Date.parse(s)
  if (!(t >= Date.parse(S.time_min) && t <= Date.parse(S.time_max)))
    ctx.addIssue({ code: 'custom', message: `must be between ${S.time_min} and ${S.time_max}` })
})

// One limit, from its floor to `max`.
const limit = (field: keyof JobLimits, max: number) =>
  z.int().min(S.limit_floors[field]).max(max).optional()

/** Resource limits of a command job; the admin's ceilings are checked by the SQL functions. */
const JobLimitsSchema = z
  .strictObject({
    memory_mb: limit('memory_mb', S.limit_max.memory_mb).meta({
      description: `memory of the whole job, MiB (default PGSCHED_JOB_MEMORY_MB, ${JOB_LIMITS_DEFAULT.memory_mb})`,
    }),
    cpu_seconds: limit('cpu_seconds', S.limit_max.cpu_seconds).meta({
      description: 'CPU time of each process, seconds',
    }),
    max_processes: limit('max_processes', S.limit_max.max_processes).meta({
      description: 'processes and threads at once',
    }),
    file_size_mb: limit('file_size_mb', S.limit_max.file_size_mb).meta({
      description: 'largest file written, MiB',
    }),
    open_files: limit('open_files', S.limit_max.open_files).meta({
      description: 'open file descriptors per process',
    }),
  })
  .meta({ id: 'JobLimits' })

// A whole-number field of a submission: its range, and its default when not given.
const intField = (f: { min: number; max: number; default: number }) =>
  z.int().min(f.min).max(f.max).default(f.default)

// The fields of a submission, shared by POST /v1/jobs and each job of a batch.
const submissionFields = z.strictObject({
  name: storable(z.string().trim().min(1, 'is required').max(S.name_max_length)),
  command: storable(z.string().min(1).max(S.command_max_length)).optional(),
  task: laneName.optional(),
  payload: z
    .unknown()
    .superRefine((v, ctx) => {
      const message = v === undefined ? undefined : payloadProblem(v)
      if (message) ctx.addIssue({ code: 'custom', message })
    })
    .meta({
      description: `JSON given to the task handler: at most ${S.payload_max_depth} levels deep and ${S.payload_max_bytes / 1024} KiB`,
    })
    .optional(),
  schedule: storable(z.string().min(1).max(S.schedule_max_length)).optional(),
  timezone: storable(z.string().min(1).max(S.timezone_max_length)).optional(),
  run_at: requestTime.optional(),
  priority: intField(S.priority),
  max_retries: intField(S.max_retries),
  backoff_base_seconds: intField(S.backoff_base_seconds),
  timeout_seconds: intField(S.timeout_seconds),
  queue: laneName.optional(),
  depends_on: z
    .array(jobId)
    .max(S.depends_on_max)
    .optional()
    .meta({ description: 'jobs that must succeed before this one runs' }),
  concurrency_policy: z.enum(CONCURRENCY_POLICIES).optional().meta({
    description:
      'a recurring job whose previous run is unfinished: allow another, forbid (skip the tick) or replace (cancel the previous)',
  }),
  limits: JobLimitsSchema.optional(),
  network: z.boolean().optional().meta({
    description:
      'give a command job network access (default false); admins only, unless PGSCHED_JOB_NETWORK=allow',
  }),
})

function checkSubmission(
  b: z.infer<typeof submissionFields>,
  ctx: z.core.$RefinementCtx<z.infer<typeof submissionFields>>,
): void {
  if ((b.command === undefined) === (b.task === undefined)) {
    ctx.addIssue({
      code: 'custom',
      path: ['command'],
      message: 'give exactly one of command or task',
    })
  }
  for (const field of ['limits', 'network'] as const) {
    if (b[field] !== undefined && b.command === undefined) {
      ctx.addIssue({ code: 'custom', path: [field], message: 'applies to a command only' })
    }
  }
  if (b.payload !== undefined && b.task === undefined) {
    ctx.addIssue({ code: 'custom', path: ['payload'], message: 'only a task takes a payload' })
  }
  if (b.schedule !== undefined && b.run_at !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['run_at'],
      message: 'give at most one of schedule or run_at',
    })
  }
  for (const field of ['timezone', 'concurrency_policy'] as const) {
    if (b[field] !== undefined && b.schedule === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [field],
        message: `${field} applies to a schedule only`,
      })
    }
  }
}

/** Body of POST /v1/jobs. */
export const JobSubmissionSchema = submissionFields
  .superRefine(checkSubmission)
  .meta({ id: 'JobSubmission' })

/** Headers of POST /v1/jobs. */
export const SubmissionHeadersSchema = z.object({
  'idempotency-key': storable(z.string().min(1).max(S.idempotency_key_max_length)).optional().meta({
    description: 'The same key from the same user returns the first job (200) instead of a new one',
  }),
})

/** One job of POST /v1/jobs/batch. */
const BatchJobSchema = submissionFields
  .extend({
    ref: storable(z.string().min(1).max(S.ref_max_length)).optional().meta({
      description: 'a name for this job within the batch, for depends_on of other jobs',
    }),
    depends_on: z
      .array(z.union([jobId, storable(z.string().min(1).max(S.ref_max_length))]))
      .max(S.depends_on_max)
      .optional()
      .meta({ description: 'ids of existing jobs, and refs of jobs in this batch' }),
  })
  .superRefine((b, ctx) => checkSubmission(b as z.infer<typeof submissionFields>, ctx as never))
  .meta({ id: 'BatchJob' })

/** Body of POST /v1/jobs/batch. */
export const JobBatchSchema = z
  .strictObject({ jobs: z.array(BatchJobSchema).min(1).max(S.batch_max_jobs) })
  .meta({ id: 'JobBatch' })

/** Body of PATCH /v1/jobs/{id}. */
export const JobPatchSchema = z
  .strictObject({
    status: z.enum(['paused', 'active']).optional(),
    priority: z.int().min(S.priority.min).max(S.priority.max).optional(),
    schedule: storable(z.string().min(1).max(S.schedule_max_length)).optional(),
    timezone: storable(z.string().min(1).max(S.timezone_max_length)).optional(),
  })
  .refine((b) => Object.keys(b).length > 0, {
    message: 'give at least one of status, priority, schedule',
  })
  .meta({ id: 'JobPatch' })

const isoTime = z.iso.datetime({ offset: true })

/** A job in responses. */
export const JobSchema = z
  .object({
    job_id: z.int(),
    owner: z.string(),
    name: z.string(),
    kind: z.enum(['command', 'task']),
    command: z.string().nullable(),
    task: z.string().nullable(),
    payload: z.unknown().meta({ description: 'the task payload (JSON), null for a command' }),
    schedule: z.string().nullable(),
    timezone: z.string(),
    next_run: isoTime.nullable(),
    priority: z.int(),
    max_retries: z.int(),
    backoff_base_seconds: z.int(),
    timeout_seconds: z.int(),
    queue: z.string().nullable(),
    status: z.enum(JOB_STATUSES),
    depends_on: z.array(z.int()),
    concurrency_policy: z.enum(CONCURRENCY_POLICIES),
    limits: JobLimitsSchema.meta({ description: 'the limits asked for; others take defaults' }),
    network: z.boolean(),
    created_at: isoTime,
    updated_at: isoTime,
  })
  .meta({ id: 'Job' })

/** One attempt in responses. */
const AttemptSchema = z
  .object({
    attempt: z.int(),
    worker: z.string(),
    started_at: isoTime,
    finished_at: isoTime.nullable(),
    outcome: z.enum(ATTEMPT_OUTCOMES),
    exit_code: z.int().nullable(),
    error: z.string().nullable(),
    sandbox: z
      .string()
      .nullable()
      .meta({
        description: `how the worker isolated this command attempt (${SANDBOX_MODES.join(', ')}); null for a task`,
      }),
  })
  .meta({ id: 'Attempt' })

/** A run in responses. */
export const RunSchema = z
  .object({
    run_id: z.int(),
    job_id: z.int(),
    job_name: z.string(),
    status: z.enum(RUN_STATUSES),
    attempt: z.int(),
    scheduled_for: isoTime,
    available_at: isoTime,
    started_at: isoTime.nullable(),
    finished_at: isoTime.nullable(),
    worker: z.string().nullable(),
    exit_code: z.int().nullable(),
    output: z.string().nullable().meta({ description: 'the last 64 KiB of stdout and stderr' }),
    error: z.string().nullable(),
    created_at: isoTime,
  })
  .meta({ id: 'Run' })

/** A run with its attempts. */
export const RunDetailSchema = RunSchema.extend({
  traceparent: z.string().nullable().meta({
    description:
      "the W3C traceparent of the span that made the run (its submission or cron tick), which each attempt's span continues or links to; null when made untraced",
  }),
  attempts: z.array(AttemptSchema),
}).meta({ id: 'RunDetail' })

/** Query of list endpoints. */
export const PageQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z
    .string()
    .regex(/^[1-9][0-9]{0,15}$/, 'must be a next_cursor from a previous page')
    .optional(),
})

/** Query of GET /v1/jobs. */
export const JobListQuerySchema = PageQuerySchema.extend({
  status: z.enum(JOB_STATUSES).optional(),
  name: storable(z.string().min(1).max(S.name_max_length)).optional(),
})

/** Path parameter `id`. */
export const IdParamSchema = z.object({
  id: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
})

/** An RFC 9457 problem document. */
export const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.int(),
    detail: z.string(),
    errors: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
  })
  .meta({ id: 'Problem' })

/** A worker process in responses. */
export const WorkerSchema = z
  .object({
    name: z.string(),
    host: z.string(),
    pid: z.int(),
    concurrency: z.int(),
    running: z.int().meta({ description: 'runs in hand at the last heartbeat' }),
    state: z.enum(WORKER_STATES),
    started_at: isoTime,
    heartbeat_at: isoTime,
    heartbeat_age_seconds: z.number(),
    stopped_at: isoTime.nullable(),
    error: z.string().nullable().meta({ description: 'why the leader declared it dead' }),
    sandbox: z.string().nullable().meta({
      description:
        'how it isolates command jobs: bwrap, rlimits (resource-limited, not isolated), none, or why it refuses them',
    }),
  })
  .meta({ id: 'Worker' })

/** The scheduler leadership in responses. */
export const SchedulerSchema = z
  .object({
    leader: z.string().nullable().meta({ description: 'host:pid of the last elected leader' }),
    term: z.int().nullable().meta({ description: 'increases with every election' }),
    since: isoTime.nullable(),
    leading: z.boolean().meta({ description: 'whether that leader holds the lock now' }),
  })
  .meta({ id: 'Scheduler' })

/** The degradation state in responses. */
export const DegradationSchema = z
  .object({
    mode: z.enum(['auto', 'manual']),
    level: z.int().meta({
      description:
        '0 normal; 1 priorities 8-10 not run; 2 history capped; 3 dependencies not checked; 4 submissions refused',
    }),
    cause: z.string(),
    changed_at: isoTime,
    warn_queue_depth: z.int(),
    critical_queue_depth: z.int(),
    queue_depth: z.int().nullable(),
    measured_at: isoTime.nullable(),
    resolver_fallbacks: z.int().meta({
      description: 'times the dependency resolver fell back to promoting without checks',
    }),
    events: z.array(
      z.object({
        at: isoTime,
        from_level: z.int(),
        to_level: z.int(),
        mode: z.string(),
        cause: z.string(),
        actor: z.string(),
      }),
    ),
  })
  .meta({ id: 'Degradation' })

/** Body of PUT /v1/admin/degradation. */
export const DegradationChangeSchema = z
  .strictObject({
    mode: z.enum(['auto', 'manual']),
    level: z.int().min(0).max(4).optional(),
    reason: storable(z.string().min(1).max(500)).optional(),
    warn_queue_depth: z.int().min(1).optional(),
    critical_queue_depth: z.int().min(2).optional(),
  })
  .superRefine((b, ctx) => {
    if (b.mode === 'manual' && b.level === undefined)
      ctx.addIssue({ code: 'custom', path: ['level'], message: 'a manual mode needs a level' })
    if (b.mode === 'auto' && b.level !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['level'],
        message: 'the automatic mode sets the level itself',
      })
  })
  .meta({ id: 'DegradationChange' })

const ceilingFields = {
  memory_mb: limit('memory_mb', S.limit_ceiling_max),
  cpu_seconds: limit('cpu_seconds', S.limit_ceiling_max),
  max_processes: limit('max_processes', S.limit_ceiling_max),
  file_size_mb: limit('file_size_mb', S.limit_ceiling_max),
  open_files: limit('open_files', S.limit_ceiling_max),
}

/** The admin's ceilings on job limits, in responses. */
export const JobLimitCeilingsSchema = z
  .object({
    ceilings: z.object(ceilingFields).meta({
      description: 'the most a submission may ask for in limits; larger asks are refused (400)',
    }),
    network_allowed: z.boolean().meta({
      description:
        'whether SQL sessions that act only for themselves may give jobs network access (REST: PGSCHED_JOB_NETWORK)',
    }),
  })
  .meta({ id: 'JobLimitCeilings' })

/** Body of PUT /v1/admin/job-limits: the ceilings to change, the others kept. */
export const JobLimitCeilingsChangeSchema = z
  .strictObject({
    ceilings: z.strictObject(ceilingFields).optional(),
    network_allowed: z.boolean().optional(),
  })
  .meta({ id: 'JobLimitCeilingsChange' })
