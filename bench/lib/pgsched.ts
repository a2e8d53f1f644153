/** @module Running pgsched for the benchmark: its processes, and a fast way to fill a queue. */
import type { SqlPool } from '../../src/db/client.ts'
import { type Service, startPgsched } from '../../test/processes.ts'

/** The HS256 secret the benchmark's API processes use. */
export const BENCH_SECRET = 'bench-secret-that-is-long-enough-for-hs256'

/** Starts `pgsched <command>` on database `url`, with the benchmark's task folder. */
export function startPgschedProcess(
  command: 'api' | 'worker' | 'scheduler',
  url: string,
  env: Record<string, string> = {},
): Promise<Service> {
  return startPgsched(command, {
    DATABASE_URL: url,
    PGSCHED_JWT_SECRET: BENCH_SECRET,
    PGSCHED_TASKS_DIR: 'bench/tasks',
    PGSCHED_LOG_LEVEL: 'info',
    // The benchmark measures throughput, not protection from one user.
    PGSCHED_RATE_LIMIT_PER_MINUTE: '100000000',
    ...env,
  })
}

/**
 * Queues `n` runs of no-op jobs in bulk, as submit_jobs would leave them (job, run and executor
 * job), in chunks of 10,000: the benchmark's fast way to build a backlog. `kind` picks the no-op
 * task or the shell command `true`.
 */
export async function seedQueuedRuns(
  sql: SqlPool,
  n: number,
  kind: 'task' | 'command' = 'task',
  runAt = 'now()',
): Promise<void> {
  for (let done = 0; done < n; done += 10_000) {
    const count = Math.min(10_000, n - done)
    await sql.unsafe(`
      WITH j AS (
        INSERT INTO pgsched.jobs (owner, name, kind, task, command, status)
        SELECT 'bench', 'noop', '${kind}', ${kind === 'task' ? "'noop'" : 'NULL'},
          ${kind === 'command' ? "'true'" : 'NULL'}, 'active'
        FROM generate_series(1, ${count})
        RETURNING id
      ), r AS (
        INSERT INTO pgsched.runs (job_id, scheduled_for, available_at)
        SELECT id, ${runAt}, ${runAt} FROM j
        RETURNING id, attempt
      )
      SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
        SELECT ROW('pgsched_run', json_build_object('run_id', id, 'attempt', attempt), NULL,
          ${runAt}, 1, 'pgsched_run:' || id, 5, NULL)::graphile_worker.job_spec
        FROM r))`)
  }
}
