-- 000003_workers_and_rescue: the worker registry and its heartbeats, rescue of runs whose worker
-- is lost, and hand-back of runs on graceful shutdown.
-- Cost: one new table and index; replaces run_start and run_finish; swaps a CHECK on
-- run_attempts (validates existing rows under a brief ACCESS EXCLUSIVE lock).

-- One row per worker process, kept fresh by its heartbeats. The leader declares a worker dead
-- when it has been silent past the heartbeat timeout, and rescues what it held.
CREATE TABLE pgsched.workers (
  name text PRIMARY KEY,
  host text NOT NULL,
  pid integer NOT NULL,
  concurrency integer NOT NULL CHECK (concurrency > 0),
  -- Runs in hand as of the last heartbeat: executing, or finished with the result not yet written.
  runs bigint[] NOT NULL DEFAULT '{}',
  -- Graphile Worker pool ids of this process: their locks are released when it is dead.
  executor_ids text[] NOT NULL DEFAULT '{}',
  state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'stopping', 'stopped', 'dead')),
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped_at timestamptz,
  -- Why the leader declared it dead.
  error text
);

CREATE INDEX workers_live_idx ON pgsched.workers (heartbeat_at) WHERE state IN ('active', 'stopping');

-- For the sweep that finds queued runs whose executor job was lost.
CREATE INDEX runs_waiting_idx ON pgsched.runs (available_at) WHERE status IN ('queued', 'failed');

-- 'interrupted': the worker was shut down and handed the attempt back; it does not use a retry.
ALTER TABLE pgsched.run_attempts DROP CONSTRAINT run_attempts_outcome_check;
ALTER TABLE pgsched.run_attempts ADD CONSTRAINT run_attempts_outcome_check CHECK (
  outcome IN ('running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'interrupted')
);

/**
 * A worker's heartbeat: registers it on first call, then records that it is alive, what it holds
 * and its state ('active', 'stopping' while it drains, 'stopped' when done). Returns the state
 * it had before, so a worker that was declared dead while it was unresponsive learns it (its
 * runs were rescued) and comes back as a new member.
 */
CREATE FUNCTION pgsched.worker_heartbeat(
  p_name text, p_host text, p_pid integer, p_concurrency integer, p_runs bigint[],
  p_executor_ids text[], p_state text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  prev text;
BEGIN
  IF p_state NOT IN ('active', 'stopping', 'stopped') THEN
    PERFORM pgsched._invalid('state', format('unknown worker state %L', p_state));
  END IF;
  SELECT state INTO prev FROM pgsched.workers WHERE name = p_name FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO pgsched.workers (name, host, pid, concurrency, runs, executor_ids, state, stopped_at)
    VALUES (p_name, p_host, p_pid, p_concurrency, p_runs, p_executor_ids, p_state,
      CASE WHEN p_state = 'stopped' THEN now() END);
    RETURN NULL;
  END IF;
  UPDATE pgsched.workers
  SET heartbeat_at = now(), runs = p_runs, executor_ids = p_executor_ids, state = p_state,
    concurrency = p_concurrency, stopped_at = CASE WHEN p_state = 'stopped' THEN now() END,
    error = CASE WHEN p_state = 'active' THEN NULL ELSE error END
  WHERE name = p_name;
  RETURN prev;
END
$$;

/**
 * Marks attempt p_attempt of a run as running on p_worker and returns what to execute. Returns no
 * row when the attempt is no longer current (cancelled, replaced, or its job paused), or when the
 * worker has been declared dead (what it held was rescued). Calling it again from the same worker
 * (its first answer was lost) returns the same attempt.
 */
CREATE OR REPLACE FUNCTION pgsched.run_start(p_run_id bigint, p_attempt integer, p_worker text)
RETURNS TABLE (
  run_id bigint, job_id bigint, attempt integer, kind text, command text, task text,
  payload jsonb, timeout_seconds integer, traceparent text
)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY
  WITH started AS (
    UPDATE pgsched.runs r
    SET status = 'running', worker = p_worker, updated_at = now(), error = NULL, exit_code = NULL,
      started_at = CASE WHEN r.status = 'running' THEN r.started_at ELSE now() END
    FROM pgsched.jobs j
    WHERE r.id = p_run_id AND r.attempt = p_attempt
      AND (r.status IN ('queued', 'failed') OR (r.status = 'running' AND r.worker = p_worker))
      AND j.id = r.job_id AND j.status IN ('active', 'completed')
      AND NOT EXISTS (SELECT 1 FROM pgsched.workers w WHERE w.name = p_worker AND w.state = 'dead')
    RETURNING r.id, r.job_id, r.attempt, j.kind, j.command, j.task, j.payload, j.timeout_seconds,
      coalesce(r.traceparent, j.traceparent) AS traceparent
  ), attempt_row AS (
    INSERT INTO pgsched.run_attempts (run_id, attempt, worker)
    SELECT s.id, s.attempt, p_worker FROM started s
    ON CONFLICT DO NOTHING
  )
  SELECT * FROM started;
END
$$;

/**
 * Records the result of attempt p_attempt in one transaction. Success finishes the run. A
 * failure ('failed', 'timed_out', or 'lost' with its worker) re-enqueues the run after backoff
 * (base × 2^(failures-1)) while the job's retries last, and dead-letters it after. 'interrupted'
 * (the worker shut down and handed it back) re-enqueues it at once without using a retry.
 * Returns the run's new status, or NULL when the attempt is no longer current (a late result from
 * a zombie worker is logged as an event and dropped).
 */
CREATE OR REPLACE FUNCTION pgsched.run_finish(
  p_run_id bigint, p_attempt integer, p_worker text, p_outcome text,
  p_exit_code integer DEFAULT NULL, p_output text DEFAULT NULL, p_error text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgsched.runs;
  j pgsched.jobs;
  failures integer;
  new_status text;
BEGIN
  IF p_outcome NOT IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'interrupted') THEN
    PERFORM pgsched._invalid('outcome', format('unknown outcome %L', p_outcome));
  END IF;
  SELECT * INTO r FROM pgsched.runs
  WHERE id = p_run_id AND attempt = p_attempt AND status = 'running' AND worker = p_worker
  FOR UPDATE;

  UPDATE pgsched.run_attempts a
  SET finished_at = now(), outcome = p_outcome, exit_code = p_exit_code, error = p_error
  WHERE a.run_id = p_run_id AND a.attempt = p_attempt AND a.worker = p_worker AND a.outcome = 'running';

  IF r.id IS NULL THEN
    INSERT INTO pgsched.run_events (run_id, to_status, attempt, worker, error)
    SELECT p_run_id, 'result_dropped', p_attempt, p_worker,
      format('late %s result of attempt %s dropped: the attempt is no longer current', p_outcome, p_attempt)
    -- A cancelled attempt's result is expected to arrive late, and a result the worker sends
    -- again (its first commit's answer was lost) was recorded already; others are news.
    WHERE p_outcome <> 'cancelled' AND EXISTS (SELECT 1 FROM pgsched.runs WHERE id = p_run_id)
      AND NOT EXISTS (
        SELECT 1 FROM pgsched.run_attempts a
        WHERE a.run_id = p_run_id AND a.attempt = p_attempt AND a.worker = p_worker
          AND a.outcome = p_outcome AND a.finished_at < now()
      );
    RETURN NULL;
  END IF;
  SELECT * INTO j FROM pgsched.jobs WHERE id = r.job_id;
  SELECT count(*) INTO failures FROM pgsched.run_attempts a
  WHERE a.run_id = p_run_id AND a.outcome IN ('failed', 'timed_out', 'lost');

  new_status := CASE
    WHEN p_outcome = 'succeeded' THEN 'succeeded'
    WHEN p_outcome = 'cancelled' THEN 'cancelled'
    WHEN p_outcome = 'interrupted' THEN 'queued'
    WHEN failures <= j.max_retries THEN 'failed'
    ELSE 'dead'
  END;

  UPDATE pgsched.runs
  SET status = new_status, exit_code = p_exit_code, output = p_output, error = p_error,
    finished_at = CASE WHEN new_status NOT IN ('failed', 'queued') THEN now() END,
    updated_at = now(),
    attempt = CASE WHEN new_status IN ('failed', 'queued') THEN attempt + 1 ELSE attempt END,
    available_at = CASE
      WHEN new_status = 'failed'
        THEN now() + make_interval(secs => j.backoff_base_seconds * power(2, failures - 1))
      WHEN new_status = 'queued' THEN now()
      ELSE available_at END
  WHERE id = p_run_id;

  IF new_status IN ('failed', 'queued') THEN
    PERFORM pgsched._enqueue_attempt(p_run_id);
  ELSIF j.schedule IS NULL AND j.status = 'active' AND NOT EXISTS (
    SELECT 1 FROM pgsched.runs WHERE runs.job_id = j.id AND status IN ('waiting', 'queued', 'running', 'failed')
  ) THEN
    UPDATE pgsched.jobs SET status = 'completed', updated_at = now() WHERE id = j.id;
  END IF;
  RETURN new_status;
END
$$;

/**
 * The leader's rescue sweep; every action is fenced, so two sweeps at once are harmless.
 *  1. Workers silent for longer than p_timeout are declared dead. Their running attempts are
 *     recorded as 'lost' and retried under the job's policy (or dead-lettered); runs their
 *     executor had claimed but not started are enqueued again; their Graphile Worker locks (jobs
 *     and serial queues) are released and the stale executor jobs deleted.
 *  2. Running attempts whose worker is dead or stopped, or no longer reports holding them, are
 *     lost too (a worker that died mid-handshake, or a result that could not be written).
 *  3. Safety net: a waiting run whose executor job has vanished is enqueued again (checks the
 *     p_orphan_batch runs that have waited longest).
 *  4. Rows of workers dead or stopped for a day are deleted.
 * Returns one row per action, for the log.
 */
CREATE FUNCTION pgsched.rescue(p_timeout interval, p_orphan_batch integer DEFAULT 100)
RETURNS TABLE (action text, worker text, run_id bigint, detail text)
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  r record;
  stale bigint[];
BEGIN
  FOR w IN
    UPDATE pgsched.workers ws
    SET state = 'dead', stopped_at = now(),
      error = format('no heartbeat for %s s', round(extract(epoch FROM now() - ws.heartbeat_at)))
    WHERE ws.state IN ('active', 'stopping') AND ws.heartbeat_at < now() - p_timeout
    RETURNING ws.name, ws.executor_ids, ws.error
  LOOP
    action := 'worker_dead'; worker := w.name; run_id := NULL; detail := w.error;
    RETURN NEXT;
    SELECT array_agg(gj.id) INTO stale FROM graphile_worker.jobs gj
    WHERE gj.locked_by = ANY (w.executor_ids);
    FOR r IN
      SELECT ru.id FROM pgsched.runs ru JOIN graphile_worker.jobs gj ON gj.key = 'pgsched_run:' || ru.id
      WHERE gj.id = ANY (stale) AND ru.status IN ('queued', 'failed')
      FOR UPDATE OF ru
    LOOP
      -- The old executor job is locked, so this creates a new one and detaches the old.
      PERFORM pgsched._enqueue_attempt(r.id);
      action := 'run_requeued'; worker := w.name; run_id := r.id;
      detail := 'claimed by a lost worker before it started';
      RETURN NEXT;
    END LOOP;
  END LOOP;

  FOR r IN
    SELECT ru.id, ru.attempt, ru.worker, ws.state AS worker_state
    FROM pgsched.runs ru LEFT JOIN pgsched.workers ws ON ws.name = ru.worker
    WHERE ru.status = 'running' AND (
      ws.state IN ('dead', 'stopped')
      OR (ws.name IS NULL AND ru.updated_at < now() - p_timeout)
      OR (ws.state IN ('active', 'stopping') AND NOT (ru.id = ANY (ws.runs))
          AND ru.updated_at < ws.heartbeat_at - p_timeout)
    )
    FOR UPDATE OF ru SKIP LOCKED
  LOOP
    detail := format('worker lost: %s %s', r.worker, CASE
      WHEN r.worker_state = 'dead' THEN 'stopped sending heartbeats'
      WHEN r.worker_state = 'stopped' THEN 'stopped without reporting this attempt'
      WHEN r.worker_state IS NULL THEN 'is not a registered worker'
      ELSE 'no longer holds this attempt' END);
    action := 'run_lost'; worker := r.worker; run_id := r.id;
    detail := detail || ' → ' || coalesce(
      pgsched.run_finish(r.id, r.attempt, r.worker, 'lost', NULL, NULL, detail), 'already moved on');
    RETURN NEXT;
  END LOOP;

  -- Locks are released only now: a released job could otherwise be claimed before its run moved on.
  FOR w IN
    SELECT ws.name, ws.executor_ids FROM pgsched.workers ws
    WHERE ws.state = 'dead' AND cardinality(ws.executor_ids) > 0
      AND EXISTS (SELECT 1 FROM graphile_worker.jobs gj WHERE gj.locked_by = ANY (ws.executor_ids))
  LOOP
    SELECT array_agg(gj.id) INTO stale FROM graphile_worker.jobs gj
    WHERE gj.locked_by = ANY (w.executor_ids);
    PERFORM graphile_worker.force_unlock_workers(w.executor_ids);
    PERFORM graphile_worker.complete_jobs(stale);
  END LOOP;

  FOR r IN
    SELECT ru.id FROM pgsched.runs ru JOIN pgsched.jobs j ON j.id = ru.job_id
    WHERE ru.status IN ('queued', 'failed') AND ru.available_at < now() - p_timeout
      AND j.status IN ('active', 'completed')
      AND NOT EXISTS (
        SELECT 1 FROM graphile_worker.jobs gj
        WHERE gj.key = 'pgsched_run:' || ru.id AND (gj.locked_at IS NOT NULL OR gj.attempts < gj.max_attempts)
      )
    ORDER BY ru.available_at LIMIT p_orphan_batch
    FOR UPDATE OF ru SKIP LOCKED
  LOOP
    PERFORM pgsched._enqueue_attempt(r.id);
    action := 'run_requeued'; worker := NULL; run_id := r.id;
    detail := 'its executor job was lost';
    RETURN NEXT;
  END LOOP;

  DELETE FROM pgsched.workers ws
  WHERE ws.state IN ('dead', 'stopped') AND ws.stopped_at < now() - interval '1 day';
END
$$;
