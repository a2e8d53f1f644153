/**
 * @module REST submissions, group-committed (db/group-commit.ts): requests that arrive together
 * share a transaction, and each is answered after its commit.
 */
import type { Job } from '../core/types.ts'
import type { Sql, SqlPool } from '../db/client.ts'
import { GroupCommit } from '../db/group-commit.ts'
import { type JobSubmission, jobGet, jobSubmit } from '../db/queries/jobs.ts'
import { planIfUnplanned } from '../scheduler/ticker.ts'

/** The answer to one submission. */
export interface Submitted {
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

/** Writes a submission (and plans a schedule's first tick, so the answer shows next_run). */
export async function submitOne(tx: Sql, c: SubmitCall): Promise<Submitted> {
  const res = await jobSubmit(tx, c.submission, c.owner, c.traceparent)
  if (!res.created || res.job.schedule === null) return res
  await planIfUnplanned(tx, res.job.job_id)
  return { job: (await jobGet(tx, res.job.job_id))!, created: true }
}

/** One per app. A repeated idempotency key waits for a later transaction, so its answer can tell
 * "created" from "returned the earlier job". */
export function submitBatcher(sql: SqlPool): GroupCommit<SubmitCall, Submitted> {
  return new GroupCommit(sql, submitOne, {
    keyOf: (c) =>
      c.submission.idempotency_key ? `${c.owner}\u0000${c.submission.idempotency_key}` : undefined,
  })
}
