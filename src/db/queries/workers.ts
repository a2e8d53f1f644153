/** @module Queries on pgsched.workers: heartbeats, the listing, and the leader's rescue sweep. */
import type { WorkerInfo, WorkerState } from '../../core/types.ts'
import type { Sql } from '../client.ts'

/** What a worker reports with each heartbeat. */
interface Heartbeat {
  name: string
  host: string
  pid: number
  concurrency: number
  /** Runs in hand: executing, or finished with the result not yet written. */
  runs: number[]
  /** Graphile Worker pool ids of this process (its executor locks jobs in their name). */
  executorIds: string[]
  state: Exclude<WorkerState, 'dead'>
}

/** Records a heartbeat (registering on first call); returns the state the worker had before. */
export async function workerHeartbeat(sql: Sql, h: Heartbeat): Promise<WorkerState | null> {
  const [row] = await sql<{ prev: WorkerState | null }[]>`
    SELECT pgsched.worker_heartbeat(${h.name}, ${h.host}, ${h.pid}, ${h.concurrency},
      ${h.runs}::bigint[], ${h.executorIds}::text[], ${h.state}) AS prev`
  return row!.prev
}

/** Records how a worker isolates command jobs, for GET /v1/workers and its attempts. */
export async function workerSetSandbox(sql: Sql, name: string, sandbox: string): Promise<void> {
  await sql`UPDATE pgsched.workers SET sandbox = ${sandbox} WHERE name = ${name}`
}

/** Workers, live ones first, then the most recently stopped. */
export async function workerList(sql: Sql): Promise<WorkerInfo[]> {
  return sql<WorkerInfo[]>`
    SELECT name, host, pid, concurrency, cardinality(runs) AS running, state, started_at,
      heartbeat_at, round(extract(epoch FROM now() - heartbeat_at)::numeric, 1)::float8
        AS heartbeat_age_seconds,
      stopped_at, error, sandbox
    FROM pgsched.workers
    ORDER BY state IN ('active', 'stopping') DESC, coalesce(stopped_at, started_at) DESC, name
    LIMIT 1000`
}

/** One action of the rescue sweep. */
interface RescueAction {
  action: 'worker_dead' | 'run_lost' | 'run_requeued'
  worker: string | null
  run_id: number | null
  detail: string
}

/**
 * Runs the leader's rescue sweep (pgsched.rescue) as of `now` (default: the database's clock);
 * returns what it did.
 */
export async function rescue(
  sql: Sql,
  timeoutSeconds: number,
  now?: Date,
): Promise<RescueAction[]> {
  return sql<RescueAction[]>`
    SELECT * FROM pgsched.rescue(make_interval(secs => ${timeoutSeconds}),
      p_now => coalesce(${now ?? null}::timestamptz, now()))`
}
