/**
 * @module REST submissions, group-committed (db/group-commit.ts): requests that arrive together
 * share a transaction, and each is answered after its commit.
 */
import { PgschedError } from '../core/errors.ts'
import type { Job } from '../core/types.ts'
import type { Sql, SqlPool } from '../db/client.ts'
import { eachInTransaction, GroupCommit, type WriteGroup } from '../db/group-commit.ts'
import {
  type JobSubmission,
  jobGet,
  jobPlanIfUnplanned,
  jobSubmit,
  jobSubmitBatch,
} from '../db/queries/jobs.ts'
import { payloadProblem } from './schemas.ts'

/** The answer to one submission. */
interface Submitted {
  job: Job
  /** False when an idempotency key returned an earlier job. */
  created: boolean
}

/** One submission as the batcher writes it. */
export interface SubmitCall {
  submission: JobSubmission
  owner: string
  traceparent: string | null
}

/**
 * Plans the first tick of a just-created scheduled job in the submitting transaction, so the
 * answer shows next_run; other submissions are returned as they are.
 */
export async function withFirstTick<T extends Submitted>(tx: Sql, s: T): Promise<T> {
  if (!s.created || s.job.schedule === null) return s
  await jobPlanIfUnplanned(tx, s.job.job_id)
  return { ...s, job: (await jobGet(tx, s.job.job_id))! }
}

/** Writes a submission, its first tick planned. */
async function submitOne(tx: Sql, c: SubmitCall): Promise<Submitted> {
  return withFirstTick(tx, await jobSubmit(tx, c.submission, c.owner, c.traceparent))
}

/** A submission as an element of pgsched.submit_jobs' JSON array. */
function batchElement({ run_at, ...rest }: JobSubmission) {
  return run_at ? { ...rest, run_at: run_at.toISOString() } : rest
}

/**
 * Writes a group's submissions with one pgsched.submit_jobs call per owner and traceparent (one,
 * unless tracing gives every request its own), set-based: validation and inserts are a few
 * statements for the whole group, and its runs get their executor jobs with one add_jobs call.
 * Answers are read with one query per call, in the group's order.
 */
async function submitMany(tx: Sql, calls: SubmitCall[]): Promise<Submitted[]> {
  const byCaller = new Map<string, number[]>()
  calls.forEach((c, i) => {
    const k = `${c.owner}\u0000${c.traceparent ?? ''}`
    byCaller.set(k, [...(byCaller.get(k) ?? []), i])
  })
  const out: Submitted[] = new Array(calls.length)
  for (const indexes of byCaller.values()) {
    const first = calls[indexes[0]!]!
    const submitted = await jobSubmitBatch(
      tx,
      indexes.map((i) => batchElement(calls[i]!.submission)),
      first.owner,
      first.traceparent,
    )
    for (const [k, i] of indexes.entries()) {
      const { job, created } = submitted[k]!
      out[i] = await withFirstTick(tx, { job, created })
    }
  }
  return out
}

// A lone submission goes through submit_job: its errors name the field ('name'), where
// submit_jobs names the element ('jobs[0].name'). A group that fails is split until the
// failing call is alone (db/group-commit.ts), so every refusal is submit_job's.
const submitOneGroup = eachInTransaction(submitOne)
const submitManyGroup = eachInTransaction(submitMany)

/** Writes a group of submissions in one transaction, set-based when there is more than one. */
const submitGroup: WriteGroup<SubmitCall, Submitted> = async (sql, items, signal) =>
  items.length === 1
    ? submitOneGroup(sql, items, signal)
    : (await submitManyGroup(sql, [items], signal))[0]!

/**
 * Refuses (400) a submission whose statement could fail to build: a payload JSON.stringify cannot
 * serialize (too deep for the stack, a bigint, a cycle) or an invalid run_at Date. Such a failure
 * inside a shared transaction is never reported and would hold the group up (db/group-commit.ts);
 * the request schema refuses these already, this holds for any caller.
 */
export function checkSubmitCall(c: SubmitCall): void {
  const { payload, run_at } = c.submission
  const problem = payload === undefined ? undefined : payloadProblem(payload)
  if (problem) invalid('payload', problem)
  if (run_at != null && !(run_at instanceof Date && Number.isFinite(run_at.getTime())))
    invalid('run_at', 'is not a valid time')
}

function invalid(field: string, message: string): never {
  throw new PgschedError('validation', `${field}: ${message}`, { errors: [{ field, message }] })
}

/**
 * How long a group of submissions may take to write: well under the API's request timeout
 * (middleware/breaker.ts, 10 s), so its callers hear why rather than a 503 for everyone.
 */
const SUBMIT_SETTLE_TIMEOUT_MS = 5000

/** One per app. A repeated idempotency key waits for a later transaction, so its answer can tell
 * "created" from "returned the earlier job". */
export function submitBatcher(sql: SqlPool): GroupCommit<SubmitCall, Submitted> {
  return new GroupCommit(sql, submitGroup, {
    keyOf: (c) =>
      c.submission.idempotency_key ? `${c.owner}\u0000${c.submission.idempotency_key}` : undefined,
    check: checkSubmitCall,
    settleTimeoutMs: SUBMIT_SETTLE_TIMEOUT_MS,
  })
}
