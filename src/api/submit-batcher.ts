/**
 * @module Group commit for REST submissions. Requests that arrive while earlier ones are being
 * written share one transaction (one commit, one flush of the WAL, one executor wake-up), and each
 * is answered only after that transaction has committed. At low load a request is written alone,
 * at once. A submission that fails fails the shared transaction; then each submission of that group
 * is written again alone, so that every request gets its own answer.
 */
import type { Job } from '../core/types.ts'
import type { Sql, SqlPool } from '../db/client.ts'
import { type JobSubmission, jobGet, jobSubmit } from '../db/queries/jobs.ts'
import { planIfUnplanned } from '../scheduler/ticker.ts'

/** The answer to one submission. */
export interface Submitted {
  job: Job
  /** False when an idempotency key returned an earlier job. */
  created: boolean
}

interface Pending {
  submission: JobSubmission
  owner: string
  traceparent: string | null
  resolve(s: Submitted): void
  reject(e: unknown): void
}

/** Options of a SubmitBatcher. */
export interface BatcherOptions {
  /** Most submissions in one transaction. @default 100 */
  maxBatch?: number
  /** Transactions in flight at once; more requests wait and form the next groups. @default 4 */
  maxInFlight?: number
}

/** Writes a submission (and plans a schedule's first tick, so the answer shows next_run). */
export async function submitOne(
  tx: Sql,
  s: JobSubmission,
  owner: string,
  traceparent: string | null,
): Promise<Submitted> {
  const res = await jobSubmit(tx, s, owner, traceparent)
  if (!res.created || res.job.schedule === null) return res
  await planIfUnplanned(tx, res.job.job_id)
  return { job: (await jobGet(tx, res.job.job_id))!, created: true }
}

/** One per app. */
export class SubmitBatcher {
  readonly #sql: SqlPool
  readonly #maxBatch: number
  readonly #maxInFlight: number
  #queue: Pending[] = []
  #inFlight = 0

  constructor(sql: SqlPool, o: BatcherOptions = {}) {
    this.#sql = sql
    this.#maxBatch = o.maxBatch ?? 100
    this.#maxInFlight = o.maxInFlight ?? 4
  }

  /** Submits one job; resolves once the transaction that wrote it has committed. */
  submit(submission: JobSubmission, owner: string, traceparent: string | null): Promise<Submitted> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ submission, owner, traceparent, resolve, reject })
      this.#pump()
    })
  }

  #pump(): void {
    while (this.#inFlight < this.#maxInFlight && this.#queue.length > 0) {
      const group = this.#take()
      this.#inFlight++
      void this.#write(group).finally(() => {
        this.#inFlight--
        this.#pump()
      })
    }
  }

  // The next group; a repeated idempotency key waits for a later group, so that its answer can
  // tell "created" from "returned the earlier job".
  #take(): Pending[] {
    const group: Pending[] = []
    const rest: Pending[] = []
    const keys = new Set<string>()
    for (const p of this.#queue) {
      const key = p.submission.idempotency_key
      const k = key ? `${p.owner}\u0000${key}` : undefined
      if (group.length >= this.#maxBatch || (k && keys.has(k))) {
        rest.push(p)
        continue
      }
      if (k) keys.add(k)
      group.push(p)
    }
    this.#queue = rest
    return group
  }

  async #write(group: Pending[]): Promise<void> {
    if (group.length > 1) {
      try {
        const all = await this.#sql.begin((tx) =>
          Promise.all(group.map((p) => submitOne(tx, p.submission, p.owner, p.traceparent))),
        )
        for (const [i, p] of group.entries()) p.resolve(all[i]!)
        return
      } catch {
        // Fall through: each alone, for its own answer.
      }
    }
    await Promise.all(
      group.map((p) =>
        this.#sql
          .begin((tx) => submitOne(tx, p.submission, p.owner, p.traceparent))
          .then(p.resolve, p.reject),
      ),
    )
  }
}
