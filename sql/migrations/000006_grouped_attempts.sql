-- 000006_grouped_attempts: a worker starts, and records the results of, the attempts of a group of
-- runs in one statement each: its own transaction, one round trip, instead of BEGIN, one call per
-- run and COMMIT. Round trips, not SQL, were most of a no-op run's cost (see bench/RESULTS.md).
-- The history and dependency triggers on runs fire once per statement (transition tables), so a
-- group's statement logs and resolves its rows in one go.
-- Cost: three new functions; run_start and _complete_if_done become groups of one; four triggers
-- replaced. No table changes.

/**
 * Marks the attempts (p_run_ids[i], p_attempts[i]) running on p_worker and returns what executing
 * them needs; an attempt that is no longer current (cancelled, rescued, superseded, its job
 * paused) or a worker declared dead gets no row. Asking again for an attempt already running on
 * the same worker returns it again (a lost answer is retried).
 */
CREATE FUNCTION pgsched.run_start_many(p_run_ids bigint[], p_attempts integer[], p_worker text)
RETURNS TABLE (
  run_id bigint, job_id bigint, attempt integer, kind text, command text, task text,
  payload jsonb, timeout_seconds integer, traceparent text
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
      coalesce(r.traceparent, j.traceparent) AS traceparent
  ), attempt_rows AS (
    INSERT INTO pgsched.run_attempts (run_id, attempt, worker)
    SELECT s.id, s.attempt, p_worker FROM started s
    ON CONFLICT DO NOTHING
  )
  SELECT * FROM started;
END
$$;

CREATE OR REPLACE FUNCTION pgsched.run_start(p_run_id bigint, p_attempt integer, p_worker text)
RETURNS TABLE (
  run_id bigint, job_id bigint, attempt integer, kind text, command text, task text,
  payload jsonb, timeout_seconds integer, traceparent text
)
LANGUAGE sql AS $$
  SELECT * FROM pgsched.run_start_many(ARRAY[p_run_id], ARRAY[p_attempt], p_worker)
$$;

-- A one-off job is complete once none of its runs can still run: for a group of jobs in one
-- statement; the single-job form (000004) becomes a group of one.
CREATE FUNCTION pgsched._complete_if_done(p_job_ids bigint[]) RETURNS void
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

/**
 * Records the results of a group of attempts, all on p_worker, in one transaction: element i is
 * pgsched.run_finish(p_run_ids[i], p_attempts[i], p_worker, p_outcomes[i], p_exit_codes[i],
 * p_outputs[i], p_errors[i]). Returns the new statuses in the same order (NULL where the attempt
 * was no longer current). Successes of current attempts, the common case, are recorded with three
 * statements for the whole group; every other result goes through run_finish.
 */
CREATE FUNCTION pgsched.run_finish_many(
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

------------------------------------------------------------------------------------------------
-- Triggers on runs, per statement: the history log and dependency resolution.
------------------------------------------------------------------------------------------------

DROP TRIGGER runs_log_insert ON pgsched.runs;
DROP TRIGGER runs_log_update ON pgsched.runs;
DROP FUNCTION pgsched._log_run_transition();

-- Every run transition, logged by trigger so that no path can skip it.
CREATE FUNCTION pgsched._log_run_transitions() RETURNS trigger
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

CREATE TRIGGER runs_log_insert AFTER INSERT ON pgsched.runs
  REFERENCING NEW TABLE AS new_runs
  FOR EACH STATEMENT EXECUTE FUNCTION pgsched._log_run_transitions();
CREATE TRIGGER runs_log_update AFTER UPDATE ON pgsched.runs
  REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
  FOR EACH STATEMENT EXECUTE FUNCTION pgsched._log_run_transitions();

DROP TRIGGER runs_settled ON pgsched.runs;
DROP TRIGGER runs_settled_insert ON pgsched.runs;
DROP FUNCTION pgsched._on_run_settled();

-- When runs settle, their jobs' dependents that wait are resolved in the same transaction: no
-- polling lag. A skip cascades through these same triggers.
CREATE FUNCTION pgsched._resolve_dependents(p_job_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  w record;
BEGIN
  FOR w IN
    SELECT r.id FROM pgsched.job_dependencies d
    JOIN pgsched.runs r ON r.job_id = d.job_id AND r.status = 'waiting'
    WHERE d.depends_on = ANY (p_job_ids) ORDER BY r.id
  LOOP
    IF pgsched._degradation_level() >= 3 THEN
      PERFORM pgsched._promote(w.id);
    ELSE
      PERFORM pgsched._resolve(w.id);
    END IF;
  END LOOP;
END
$$;

CREATE FUNCTION pgsched._on_runs_settled() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  settled_jobs bigint[];
BEGIN
  SELECT array_agg(DISTINCT n.job_id) INTO settled_jobs
  FROM new_runs n JOIN old_runs o ON o.id = n.id
  WHERE n.status IN ('succeeded', 'dead', 'cancelled', 'skipped')
    AND o.status IS DISTINCT FROM n.status;
  IF settled_jobs IS NOT NULL THEN
    PERFORM pgsched._resolve_dependents(settled_jobs);
  END IF;
  RETURN NULL;
END
$$;

-- A run inserted already skipped (concurrency_policy forbid) is rare: per row, only for those.
CREATE FUNCTION pgsched._on_run_inserted_skipped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgsched._resolve_dependents(ARRAY[NEW.job_id]);
  RETURN NULL;
END
$$;

CREATE TRIGGER runs_settled AFTER UPDATE ON pgsched.runs
  REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
  FOR EACH STATEMENT EXECUTE FUNCTION pgsched._on_runs_settled();
CREATE TRIGGER runs_settled_insert AFTER INSERT ON pgsched.runs
  FOR EACH ROW WHEN (NEW.status = 'skipped')
  EXECUTE FUNCTION pgsched._on_run_inserted_skipped();
