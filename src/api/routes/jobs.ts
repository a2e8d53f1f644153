/** @module Routes of /v1/jobs: submit, list, read, change, cancel, trigger, and a job's runs. */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi'
import { z } from 'zod'

import { PgschedError } from '../../core/errors.ts'
import { SUBMISSION_DEFAULTS } from '../../core/submission-defaults.ts'
import type { Job } from '../../core/types.ts'
import type { Sql } from '../../db/client.ts'
import { beginAcknowledged } from '../../db/commit.ts'
import { perPool } from '../../db/group-commit.ts'
import {
  jobCancel,
  jobGet,
  jobList,
  jobPause,
  jobPlanIfUnplanned,
  jobResume,
  jobSetPriority,
  jobSetSchedule,
  jobSubmitBatch,
  jobTrigger,
} from '../../db/queries/jobs.ts'
import { runGet, runListForJob } from '../../db/queries/runs.ts'
import {
  currentTraceparent,
  destination,
  inSpan,
  messagingAttributes,
  SpanKind,
  type SpanOptions,
} from '../../telemetry/tracing.ts'
import type { LoadShedding } from '../load-shedding.ts'
import { type AppEnv, allow, ownerScope, requireVisible } from '../middleware/auth.ts'
import { cursorId, jsonResponse, pageOf, problemResponses, security } from '../openapi.ts'
import {
  IdParamSchema,
  JobBatchSchema,
  JobListQuerySchema,
  JobPatchSchema,
  JobSchema,
  JobSubmissionSchema,
  PageQuerySchema,
  RunSchema,
  SubmissionHeadersSchema,
} from '../schemas.ts'
import { jsonify, page } from '../serialize.ts'
import { submitBatcher, withFirstTick } from '../submit-batcher.ts'

const problems = problemResponses('job', 'Conflicts with the job state')
const JobPage = pageOf(JobSchema)
const RunPage = pageOf(RunSchema)
const BatchResult = z.object({
  jobs: z.array(JobSchema.extend({ ref: z.string().nullable(), created: z.boolean() })),
})

/** Loads a job the principal may see, or throws 404. */
async function visibleJob(
  sql: Sql,
  c: { get(k: 'principal'): AppEnv['Variables']['principal'] },
  id: number,
): Promise<Job> {
  return requireVisible(c.get('principal'), 'job', id, await jobGet(sql, id))
}

/**
 * Throws 403 unless the principal may give a command job network access: an admin may, others
 * only where the operator allowed it (PGSCHED_JOB_NETWORK=allow).
 */
function requireNetworkGrant(
  p: AppEnv['Variables']['principal'],
  jobs: readonly { network?: boolean }[],
  policy: 'deny' | 'allow',
): void {
  if (policy === 'allow' || p.roles.includes('admin') || !jobs.some((j) => j.network)) return
  throw new PgschedError(
    'forbidden',
    'network: only an admin may give a job network access (the operator can allow it for everyone with PGSCHED_JOB_NETWORK=allow)',
    { errors: [{ field: 'network', message: 'only an admin may give a job network access' }] },
  )
}

/**
 * The PRODUCER span of a batch, after the messaging conventions for a batch: `send {queue}` when
 * every job goes to one queue (else `send` with no destination), `messaging.batch.message_count`,
 * and the priority when the jobs share one.
 */
function batchSpan(
  jobs: readonly { queue?: string | null; priority?: number }[],
): [string, SpanOptions] {
  const queues = new Set(jobs.map((j) => destination(j.queue)))
  const priorities = new Set(jobs.map((j) => j.priority ?? SUBMISSION_DEFAULTS.priority.default))
  const [queue] = queues.size === 1 ? queues : [undefined]
  const [priority] = priorities.size === 1 ? priorities : [undefined]
  return [
    queue === undefined ? 'send' : `send ${queue}`,
    {
      kind: SpanKind.PRODUCER,
      attributes: {
        ...(queue === undefined ? { 'messaging.system': 'pgsched' } : messagingAttributes(queue)),
        'messaging.batch.message_count': jobs.length,
        ...(priority === undefined ? {} : { 'pgsched.priority': priority }),
      },
    },
  ]
}

/** Registers the job routes; `jobNetwork` says whether non-admins may ask for network access. */
export function registerJobRoutes(
  app: OpenAPIHono<AppEnv>,
  shed: LoadShedding,
  jobNetwork: 'deny' | 'allow' = 'deny',
): void {
  // One batcher per pool: the shared pool's groups span requests, a per-request pool's do not.
  const batcherFor = perPool(submitBatcher)
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/jobs',
      summary: 'Submit a job',
      security,
      middleware: [allow('write')],
      request: {
        body: { content: { 'application/json': { schema: JobSubmissionSchema } }, required: true },
        headers: SubmissionHeadersSchema,
      },
      responses: {
        201: jsonResponse(JobSchema, 'Job created'),
        200: jsonResponse(JobSchema, 'The job first submitted with this Idempotency-Key'),
        ...problems,
      },
    }),
    async (c) => {
      const p = c.get('principal')
      const body = c.req.valid('json')
      const key = c.req.valid('header')['idempotency-key']
      requireNetworkGrant(p, [body], jobNetwork)
      await shed.admitSubmissions(c, p.sub, 1)
      const { job, created } = await inSpan(
        `send ${destination(body.queue)}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            ...messagingAttributes(body.queue),
            'pgsched.priority': body.priority ?? SUBMISSION_DEFAULTS.priority.default,
          },
        },
        async (span) => {
          // The run stores this span as its origin: its attempts continue or link to it.
          const submitted = await batcherFor(c.get('sql')).run({
            submission: {
              ...body,
              run_at: body.run_at ? new Date(body.run_at) : null,
              idempotency_key: key,
            },
            owner: p.sub,
            traceparent: currentTraceparent(),
          })
          span.setAttribute('pgsched.job_id', submitted.job.job_id)
          return submitted
        },
      )
      return c.json(jsonify(job), created ? 201 : 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/jobs/batch',
      summary:
        'Submit up to 1,000 jobs at once, all or nothing; depends_on may name jobs of the batch by ref',
      security,
      middleware: [allow('write')],
      request: {
        body: { content: { 'application/json': { schema: JobBatchSchema } }, required: true },
      },
      responses: {
        201: jsonResponse(BatchResult, 'The jobs, in the order given'),
        200: jsonResponse(BatchResult, 'Every job was an earlier one (idempotency keys)'),
        ...problems,
      },
    }),
    async (c) => {
      const p = c.get('principal')
      const { jobs } = c.req.valid('json')
      requireNetworkGrant(p, jobs, jobNetwork)
      await shed.admitSubmissions(c, p.sub, jobs.length)
      // One span for the batch, as the conventions have it: every run stores it as its origin.
      const [name, options] = batchSpan(jobs)
      // Answered only after a commit that may be acknowledged (db/commit.ts).
      const results = await inSpan(name, options, () =>
        beginAcknowledged(c.get('sql'), async (tx) => {
          const submitted = await jobSubmitBatch(tx, jobs, p.sub, currentTraceparent())
          const out = []
          for (const r of submitted) out.push(await withFirstTick(tx, r))
          return out
        }),
      )
      return c.json(
        { jobs: results.map((r) => ({ ...jsonify(r.job), ref: r.ref, created: r.created })) },
        results.some((r) => r.created) ? 201 : 200,
      )
    },
  )

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs',
      summary: 'List jobs, newest first',
      security,
      middleware: [allow('read')],
      request: { query: JobListQuerySchema },
      responses: { 200: jsonResponse(JobPage, 'A page of jobs'), ...problems },
    }),
    async (c) => {
      const p = c.get('principal')
      const q = c.req.valid('query')
      const bounds = await shed.history(c, q.limit)
      const rows = await jobList(c.get('sql'), {
        owner: ownerScope(p),
        status: q.status,
        name: q.name,
        before: cursorId(q.cursor),
        ...bounds,
      })
      return c.json(
        page(rows, bounds.limit, (j) => j.job_id),
        200,
      )
    },
  )

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs/{id}',
      summary: 'Read a job',
      security,
      middleware: [allow('read')],
      request: { params: IdParamSchema },
      responses: { 200: jsonResponse(JobSchema, 'The job'), ...problems },
    }),
    async (c) => {
      const { id } = c.req.valid('param')
      return c.json(jsonify(await visibleJob(c.get('sql'), c, id)), 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/v1/jobs/{id}',
      summary: 'Pause, resume, or change priority or schedule',
      security,
      middleware: [allow('write')],
      request: {
        params: IdParamSchema,
        body: { content: { 'application/json': { schema: JobPatchSchema } }, required: true },
      },
      responses: { 200: jsonResponse(JobSchema, 'The changed job'), ...problems },
    }),
    async (c) => {
      const { id } = c.req.valid('param')
      const patch = c.req.valid('json')
      const job = await c.get('sql').begin(async (tx) => {
        const job = await visibleJob(tx, c, id)
        if (job.status === 'cancelled' || job.status === 'completed') {
          throw new PgschedError('conflict', `job ${id} is ${job.status} and cannot change`)
        }
        if (patch.priority !== undefined) await jobSetPriority(tx, id, patch.priority)
        if (patch.schedule !== undefined || patch.timezone !== undefined) {
          if (job.schedule === null) {
            throw new PgschedError(
              'conflict',
              `job ${id} runs once; only a scheduled job's schedule can change`,
            )
          }
          const schedule = patch.schedule ?? job.schedule
          const timezone = patch.timezone ?? job.timezone
          await jobSetSchedule(tx, id, schedule, timezone)
        }
        if (patch.status === 'paused' && job.status === 'active') await jobPause(tx, id)
        if (patch.status === 'active' && job.status === 'paused') await jobResume(tx, id)
        await jobPlanIfUnplanned(tx, id)
        return (await jobGet(tx, id))!
      })
      return c.json(jsonify(job), 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/jobs/{id}',
      summary: 'Cancel a job: queued runs are cancelled and a running run is stopped',
      security,
      middleware: [allow('write')],
      request: { params: IdParamSchema },
      responses: { 200: jsonResponse(JobSchema, 'The cancelled job'), ...problems },
    }),
    async (c) => {
      const { id } = c.req.valid('param')
      const job = await c.get('sql').begin(async (tx) => {
        const job = await visibleJob(tx, c, id)
        if (job.status === 'completed')
          throw new PgschedError('conflict', `job ${id} has already completed`)
        await jobCancel(tx, id)
        return (await jobGet(tx, id))!
      })
      return c.json(jsonify(job), 200)
    },
  )

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/jobs/{id}/trigger',
      summary: 'Run a job now, outside its schedule',
      security,
      middleware: [allow('write')],
      request: { params: IdParamSchema },
      responses: { 201: jsonResponse(RunSchema, 'The new run'), ...problems },
    }),
    async (c) => {
      const { id } = c.req.valid('param')
      const run = await beginAcknowledged(c.get('sql'), async (tx) => {
        await visibleJob(tx, c, id)
        const { owner: _owner, ...run } = (await runGet(tx, await jobTrigger(tx, id)))!
        return run
      })
      return c.json(jsonify(run), 201)
    },
  )

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs/{id}/runs',
      summary: "List a job's runs, newest first",
      security,
      middleware: [allow('read')],
      request: { params: IdParamSchema, query: PageQuerySchema },
      responses: { 200: jsonResponse(RunPage, 'A page of runs'), ...problems },
    }),
    async (c) => {
      const { id } = c.req.valid('param')
      const q = c.req.valid('query')
      const sql = c.get('sql')
      await visibleJob(sql, c, id)
      const bounds = await shed.history(c, q.limit)
      const rows = await runListForJob(sql, id, { before: cursorId(q.cursor), ...bounds })
      return c.json(
        page(rows, bounds.limit, (r) => r.run_id),
        200,
      )
    },
  )
}
