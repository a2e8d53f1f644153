-- 000007_grouped_submissions: jobs submitted together (a REST group commit, a submit_jobs batch)
-- get their executor jobs from one graphile_worker.add_jobs call at the end of the group rather
-- than one add_job per run: add_job was over half of a submission's database time, and each call
-- sends its own NOTIFY, whose commits serialize.
-- Cost: _enqueue_attempt may defer to the end of the group (two transaction-local settings);
-- it and submit_jobs become wrappers of the unchanged functions they replace. No table changes.

/**
 * Enqueues the current attempts of runs p_run_ids with one add_jobs call (one insert, one NOTIFY)
 * and records each executor job on its run. An executor job the run already has is replaced (a
 * locked one is detached), as add_job with the same key does.
 */
CREATE FUNCTION pgsched._enqueue_attempts(p_run_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  gw_ids bigint[];
  gw_keys text[];
BEGIN
  IF coalesce(cardinality(p_run_ids), 0) = 0 THEN
    RETURN;
  END IF;
  SELECT array_agg(g.id), array_agg(g.key) INTO gw_ids, gw_keys
  FROM graphile_worker.add_jobs(ARRAY(
    SELECT ROW('pgsched_run', json_build_object('run_id', r.id, 'attempt', r.attempt),
      CASE WHEN j.queue IS NOT NULL THEN 'pgsched:' || j.queue END, r.available_at, 1,
      'pgsched_run:' || r.id, j.priority,
      CASE WHEN j.priority >= 8 THEN ARRAY['low'] END)::graphile_worker.job_spec
    FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.id = ANY (p_run_ids)
    ORDER BY r.id)) g;
  UPDATE pgsched.runs r SET executor_job_id = x.gw_id
  FROM unnest(gw_ids, gw_keys) AS x (gw_id, gw_key)
  WHERE r.id = substr(x.gw_key, length('pgsched_run:') + 1)::bigint;
END
$$;

-- Enqueueing one run at once stays as it was (add_job is cheaper than _enqueue_attempts'
-- set-based statements for a single run), under a new name.
ALTER FUNCTION pgsched._enqueue_attempt(bigint) RENAME TO _enqueue_attempt_now;

/**
 * Enqueues run p_run_id's current attempt; inside a group (pgsched.defer_enqueue = 'on' in this
 * transaction) it is noted and enqueued by _enqueue_deferred with the rest of the group.
 */
CREATE FUNCTION pgsched._enqueue_attempt(p_run_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('pgsched.defer_enqueue', true) = 'on' THEN
    PERFORM set_config('pgsched.deferred_runs',
      concat_ws(',', nullif(current_setting('pgsched.deferred_runs', true), ''), p_run_id), true);
  ELSE
    PERFORM pgsched._enqueue_attempt_now(p_run_id);
  END IF;
END
$$;

/** Starts a group: until _enqueue_deferred, enqueueing is noted, not done. */
CREATE FUNCTION pgsched._defer_enqueue() RETURNS void
LANGUAGE sql AS $$
  SELECT set_config('pgsched.defer_enqueue', 'on', true);
  SELECT set_config('pgsched.deferred_runs', '', true);
$$;

/** Ends a group: enqueues every run noted since _defer_enqueue, at once. */
CREATE FUNCTION pgsched._enqueue_deferred() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  noted bigint[] := string_to_array(nullif(current_setting('pgsched.deferred_runs', true), ''), ',')::bigint[];
BEGIN
  PERFORM set_config('pgsched.defer_enqueue', 'off', true);
  PERFORM set_config('pgsched.deferred_runs', '', true);
  PERFORM pgsched._enqueue_attempts(ARRAY(SELECT DISTINCT unnest(noted)));
END
$$;

-- The per-job loop stays as it was, now an internal function (invoker's rights, not granted).
ALTER FUNCTION pgsched.submit_jobs(jsonb, text, text) RENAME TO _submit_jobs_one_by_one;
ALTER FUNCTION pgsched._submit_jobs_one_by_one(jsonb, text, text) SECURITY INVOKER;
REVOKE ALL ON FUNCTION pgsched._submit_jobs_one_by_one(jsonb, text, text) FROM PUBLIC;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_submitter') THEN
    REVOKE ALL ON FUNCTION pgsched._submit_jobs_one_by_one(jsonb, text, text) FROM pgsched_submitter;
  END IF;
END
$$;

/**
 * Submits up to 1,000 jobs in the caller's transaction, all or nothing, and returns their ids in
 * order. jobs is a JSON array of objects with submit_job's fields, plus an optional "ref" (a
 * name unique in the batch); "depends_on" may hold job ids and refs of other jobs in the batch,
 * which is how a DAG is submitted at once. Cycles among refs are refused. Errors name the element
 * and field, e.g. COLUMN = 'jobs[3].depends_on'. The rate limit counts every job. The batch's
 * runs are enqueued together at the end.
 */
CREATE FUNCTION pgsched.submit_jobs(jobs jsonb, owner text DEFAULT session_user, traceparent text DEFAULT NULL)
RETURNS TABLE (ref text, job_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  -- Inside a caller's group, the caller enqueues.
  outer_group boolean := coalesce(current_setting('pgsched.defer_enqueue', true) = 'on', false);
BEGIN
  IF NOT outer_group THEN
    PERFORM pgsched._defer_enqueue();
  END IF;
  RETURN QUERY SELECT * FROM pgsched._submit_jobs_one_by_one(jobs, owner, traceparent);
  IF NOT outer_group THEN
    PERFORM pgsched._enqueue_deferred();
  END IF;
END
$$;

SELECT pgsched._grant_sql_api();
