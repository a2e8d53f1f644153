-- Runs: a worker starts attempts and records their results; run_finish holds the one
-- retry/dead-letter rule. The run history (run_events) is written by triggers, so no path can
-- skip it. Statuses and who moves a run between them: src/core/RUN-STATES.md.

/**
 * Marks the attempts (p_run_ids[i], p_attempts[i]) running on p_worker and returns what executing
 * them needs, the limits and network flag of command jobs included, and what telemetry needs: the
 * queue, the priority, and when the attempt became due (available_at) and started (started_at),
 * whose difference is its queue wait. An attempt that is no longer current (cancelled, rescued,
 * superseded, its job paused) or a worker declared dead gets no row.
 * Asking again for an attempt already running on the same worker returns it again (a lost answer
 * is retried). A command's attempt records the worker's sandbox.
 */
CREATE OR REPLACE FUNCTION pgsched.run_start_many(p_run_ids bigint[], p_attempts integer[], p_worker text)
RETURNS TABLE (
  run_id bigint, job_id bigint, attempt integer, kind text, command text, task text,
  payload jsonb, timeout_seconds integer, traceparent text, limits jsonb, network boolean,
  queue text, priority integer, available_at timestamptz, started_at timestamptz
)
-- PL/pgSQL, not SQL: its statement's plan is cached for the session. Generic plans: a custom plan
-- (the default once custom plans look cheaper) is planned again at every call, which cost more than
-- the statement itself with a deep queue (0.4 ms more at 300,000 runs).
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
  WITH wanted AS (
    SELECT * FROM unnest(p_run_ids, p_attempts) AS w (id, attempt)
  ), started AS (
    UPDATE pgsched.runs r
    SET status = 'running', worker = p_worker, updated_at = now(), error = NULL, exit_code = NULL,
      started_at = CASE WHEN r.status = 'running' THEN r.started_at ELSE now() END
    FROM pgsched.jobs j, wanted w
    WHERE r.id = w.id AND r.attempt = w.attempt
      AND (r.status IN ('queued', 'failed') OR (r.status = 'running' AND r.worker = p_worker))
      AND j.id = r.job_id AND j.status IN ('active', 'completed')
      AND NOT EXISTS (SELECT 1 FROM pgsched.workers ws WHERE ws.name = p_worker AND ws.state = 'dead')
    RETURNING r.id, r.job_id, r.attempt, j.kind, j.command, j.task, j.payload, j.timeout_seconds,
      coalesce(r.traceparent, j.traceparent) AS traceparent, j.limits, j.network,
      j.queue, j.priority::integer, r.available_at, r.started_at
  ), attempt_rows AS (
    INSERT INTO pgsched.run_attempts (run_id, attempt, worker, sandbox)
    SELECT s.id, s.attempt, p_worker,
      CASE WHEN s.kind = 'command' THEN (SELECT ws.sandbox FROM pgsched.workers ws WHERE ws.name = p_worker) END
    FROM started s
    ON CONFLICT DO NOTHING
  )
  SELECT * FROM started;
END
$$;

/**
 * Claims up to p_count executor jobs for the Graphile Worker pool p_pool and starts their runs on
 * p_worker (run_start_many), in one round trip. The worker's local queue (patched, see
 * patches/README.md) asks only for slots that are free, so a run is never claimed by a worker
 * that cannot start it at once, and a free slot waits for one round trip instead of two (claim,
 * then start). The claim is Graphile Worker 0.18's batch claim (dist/sql/getJobs.js, named-queue
 * strategy 2, one job per named queue), for its task `pgsched_run`, skipping jobs with a flag in
 * p_flags (NULL: none). Returns each claimed executor job (Graphile's row as jsonb, with its
 * task_identifier) and the run it started, NULL where the attempt is no longer current (the
 * executor job then just completes), most urgent first.
 */
CREATE OR REPLACE FUNCTION pgsched.run_claim_many(
  p_pool text, p_count integer, p_flags text[], p_worker text
) RETURNS TABLE (job jsonb, started jsonb)
-- Generic plans, as run_start_many.
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  claimed graphile_worker._private_jobs[];
BEGIN
  WITH j_raw AS (
    SELECT gj.job_queue_id, gj.priority, gj.run_at, gj.id
    FROM graphile_worker._private_jobs gj
    WHERE gj.is_available AND gj.run_at <= now()
      AND gj.task_id = (
        SELECT t.id FROM graphile_worker._private_tasks t WHERE t.identifier = 'pgsched_run')
      AND (gj.job_queue_id IS NULL OR gj.job_queue_id IN (
        SELECT q.id FROM graphile_worker._private_job_queues q
        WHERE q.is_available FOR UPDATE SKIP LOCKED))
      AND (gj.flags ?| p_flags) IS NOT TRUE
    ORDER BY gj.priority, gj.run_at
    LIMIT p_count
    FOR UPDATE SKIP LOCKED
  ), j AS (
    -- One job per named queue (a lane runs one at a time); the others stay available.
    SELECT DISTINCT ON (j_raw.job_queue_id, CASE WHEN j_raw.job_queue_id IS NULL THEN j_raw.id END)
      j_raw.job_queue_id, j_raw.id
    FROM j_raw
    ORDER BY j_raw.job_queue_id, CASE WHEN j_raw.job_queue_id IS NULL THEN j_raw.id END,
      j_raw.priority, j_raw.run_at
  ), q AS (
    UPDATE graphile_worker._private_job_queues jq SET locked_by = p_pool, locked_at = now()
    FROM j WHERE jq.id = j.job_queue_id
  ), c AS (
    UPDATE graphile_worker._private_jobs gj
    SET attempts = gj.attempts + 1, locked_by = p_pool, locked_at = now()
    FROM j WHERE gj.id = j.id
    RETURNING gj.*
  )
  SELECT array_agg(c) INTO claimed FROM c;

  RETURN QUERY
  SELECT to_jsonb(c) || jsonb_build_object('task_identifier', 'pgsched_run'), to_jsonb(s)
  FROM unnest(claimed) c
  LEFT JOIN pgsched.run_start_many(
    ARRAY(SELECT (x.payload->>'run_id')::bigint FROM unnest(claimed) x),
    ARRAY(SELECT (x.payload->>'attempt')::integer FROM unnest(claimed) x),
    p_worker
  ) s ON s.run_id = (c.payload->>'run_id')::bigint AND s.attempt = (c.payload->>'attempt')::integer
  ORDER BY c.priority, c.run_at, c.id;
END
$$;

CREATE OR REPLACE FUNCTION pgsched.run_start(p_run_id bigint, p_attempt integer, p_worker text)
RETURNS TABLE (
  run_id bigint, job_id bigint, attempt integer, kind text, command text, task text,
  payload jsonb, timeout_seconds integer, traceparent text, limits jsonb, network boolean,
  queue text, priority integer, available_at timestamptz, started_at timestamptz
)
LANGUAGE sql AS $$
  SELECT * FROM pgsched.run_start_many(ARRAY[p_run_id], ARRAY[p_attempt], p_worker)
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
  ELSE
    PERFORM pgsched._complete_if_done(j.id);
  END IF;
  RETURN new_status;
END
$$;

/**
 * Records the results of a group of attempts, all on p_worker, in one transaction: element i is
 * pgsched.run_finish(p_run_ids[i], p_attempts[i], p_worker, p_outcomes[i], p_exit_codes[i],
 * p_outputs[i], p_errors[i]). Returns the new statuses in the same order (NULL where the attempt
 * was no longer current). Successes of current attempts, the common case, are recorded with three
 * statements for the whole group; every other result goes through run_finish.
 */
CREATE OR REPLACE FUNCTION pgsched.run_finish_many(
  p_run_ids bigint[], p_attempts integer[], p_worker text, p_outcomes text[],
  p_exit_codes integer[], p_outputs text[], p_errors text[]
) RETURNS text[]
-- Generic plans, as run_start_many.
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  n integer := coalesce(cardinality(p_run_ids), 0);
  statuses text[] := array_fill(NULL::text, ARRAY[n]);
  done_items bigint[];
  done_jobs bigint[];
BEGIN
  IF EXISTS (
    SELECT 1 FROM unnest(ARRAY[cardinality(p_attempts), cardinality(p_outcomes),
      cardinality(p_exit_codes), cardinality(p_outputs), cardinality(p_errors)]) AS c (len)
    WHERE c.len IS DISTINCT FROM n
  ) THEN
    PERFORM pgsched._invalid('p_run_ids', 'every array must have one element per run');
  END IF;

  WITH item AS (
    SELECT * FROM unnest(p_run_ids, p_attempts, p_outcomes, p_exit_codes, p_outputs, p_errors)
      WITH ORDINALITY AS i (id, attempt, outcome, exit_code, output, error, ord)
  ), finished AS (
    UPDATE pgsched.runs r
    SET status = 'succeeded', exit_code = item.exit_code, output = item.output,
      error = item.error, finished_at = now(), updated_at = now()
    FROM item
    WHERE item.outcome = 'succeeded' AND r.id = item.id AND r.attempt = item.attempt
      AND r.status = 'running' AND r.worker = p_worker
    RETURNING item.ord, r.id, r.attempt, r.job_id, item.exit_code, item.error
  ), attempts AS (
    UPDATE pgsched.run_attempts a
    SET finished_at = now(), outcome = 'succeeded', exit_code = f.exit_code, error = f.error
    FROM finished f
    WHERE a.run_id = f.id AND a.attempt = f.attempt AND a.worker = p_worker AND a.outcome = 'running'
  )
  SELECT array_agg(f.ord), array_agg(DISTINCT f.job_id) INTO done_items, done_jobs FROM finished f;

  -- After the statement above, so that it sees the runs just finished.
  PERFORM pgsched._complete_if_done(done_jobs);

  FOR i IN 1 .. n LOOP
    statuses[i] := CASE
      WHEN i = ANY (done_items) THEN 'succeeded'
      ELSE pgsched.run_finish(p_run_ids[i], p_attempts[i], p_worker, p_outcomes[i],
        p_exit_codes[i], p_outputs[i], p_errors[i])
    END;
  END LOOP;
  RETURN statuses;
END
$$;

/** Replays a dead-lettered run: it gets one more attempt, now. Returns false unless it was dead. */
CREATE OR REPLACE FUNCTION pgsched.retry_run(run_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pgsched._check_job_owner((SELECT r.job_id FROM pgsched.runs r WHERE r.id = retry_run.run_id));
  UPDATE pgsched.runs r
  SET status = 'queued', attempt = r.attempt + 1, available_at = now(), worker = NULL,
    started_at = NULL, finished_at = NULL, exit_code = NULL, error = NULL, updated_at = now()
  WHERE r.id = retry_run.run_id AND r.status = 'dead';
  IF NOT FOUND THEN RETURN false; END IF;
  UPDATE pgsched.jobs j SET status = 'active', updated_at = now()
  FROM pgsched.runs r WHERE r.id = retry_run.run_id AND j.id = r.job_id AND j.status = 'completed';
  PERFORM pgsched._enqueue_attempt(retry_run.run_id);
  RETURN true;
END
$$;

-- A one-off job is complete once none of its runs can still run: for a group of jobs in one
-- statement, or (the next function) for one job.
CREATE OR REPLACE FUNCTION pgsched._complete_if_done(p_job_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
  UPDATE pgsched.jobs j SET status = 'completed', updated_at = now()
  WHERE j.id = ANY (p_job_ids) AND j.schedule IS NULL AND j.status = 'active' AND NOT EXISTS (
    SELECT 1 FROM pgsched.runs r
    WHERE r.job_id = j.id AND r.status IN ('waiting', 'queued', 'running', 'failed'))
$$;

CREATE OR REPLACE FUNCTION pgsched._complete_if_done(p_job_id bigint) RETURNS void
LANGUAGE sql AS $$
  SELECT pgsched._complete_if_done(ARRAY[p_job_id])
$$;

-- Every run transition, logged by trigger so that no path can skip it.
CREATE OR REPLACE FUNCTION pgsched._log_run_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO pgsched.run_events (run_id, from_status, to_status, attempt, worker, error)
    SELECT n.id, NULL, n.status, n.attempt, n.worker, n.error FROM new_runs n ORDER BY n.id;
  ELSE
    INSERT INTO pgsched.run_events (run_id, from_status, to_status, attempt, worker, error)
    SELECT n.id, o.status, n.status, n.attempt, n.worker, n.error
    FROM new_runs n JOIN old_runs o ON o.id = n.id
    WHERE o.status IS DISTINCT FROM n.status OR o.attempt <> n.attempt
    ORDER BY n.id;
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER runs_log_insert AFTER INSERT ON pgsched.runs
  REFERENCING NEW TABLE AS new_runs
  FOR EACH STATEMENT EXECUTE FUNCTION pgsched._log_run_transitions();

CREATE OR REPLACE TRIGGER runs_log_update AFTER UPDATE ON pgsched.runs
  REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
  FOR EACH STATEMENT EXECUTE FUNCTION pgsched._log_run_transitions();
