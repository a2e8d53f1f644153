-- 000006_grouped_attempts: a worker starts, and records the results of, the attempts of a group of
-- runs in one statement each: its own transaction, one round trip, instead of BEGIN, one call per
-- run and COMMIT. Round trips, not SQL, were most of a no-op run's cost (see bench/RESULTS.md).
-- Cost: two new functions; run_start becomes a group of one. No table changes.

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
-- PL/pgSQL, not SQL: its statement's plan is cached for the session.
LANGUAGE plpgsql AS $$
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

/**
 * Records the results of a group of attempts, all on p_worker, in one transaction: element i is
 * pgsched.run_finish(p_run_ids[i], p_attempts[i], p_worker, p_outcomes[i], p_exit_codes[i],
 * p_outputs[i], p_errors[i]). Returns the new statuses in the same order (NULL where the attempt
 * was no longer current).
 */
CREATE FUNCTION pgsched.run_finish_many(
  p_run_ids bigint[], p_attempts integer[], p_worker text, p_outcomes text[],
  p_exit_codes integer[], p_outputs text[], p_errors text[]
) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
  n integer := coalesce(cardinality(p_run_ids), 0);
  statuses text[] := '{}';
BEGIN
  IF EXISTS (
    SELECT 1 FROM unnest(ARRAY[cardinality(p_attempts), cardinality(p_outcomes),
      cardinality(p_exit_codes), cardinality(p_outputs), cardinality(p_errors)]) AS c (len)
    WHERE c.len IS DISTINCT FROM n
  ) THEN
    PERFORM pgsched._invalid('p_run_ids', 'every array must have one element per run');
  END IF;
  FOR i IN 1 .. n LOOP
    statuses := statuses || pgsched.run_finish(p_run_ids[i], p_attempts[i], p_worker,
      p_outcomes[i], p_exit_codes[i], p_outputs[i], p_errors[i]);
  END LOOP;
  RETURN statuses;
END
$$;
