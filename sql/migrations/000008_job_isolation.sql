-- 000008_job_isolation: resource limits and network access per command job, the ceilings an admin
-- sets on them, and the sandbox each worker and each attempt used.
-- Cost: adds columns with constant defaults (no table rewrite). submit_job and submit_jobs gain
-- arguments (dropped and created again, grants given again); run_start_many and run_start
-- return two more columns (dropped and created again). _submit_job and the batch's element loop
-- are wrapped, not restated.

ALTER TABLE pgsched.jobs
  -- The limits asked for (memory_mb, cpu_seconds, max_processes, file_size_mb, open_files);
  -- a limit not given takes the executing worker's default.
  ADD COLUMN limits jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limits) = 'object'),
  ADD COLUMN network boolean NOT NULL DEFAULT false;

ALTER TABLE pgsched.settings
  -- The most a submission may ask for; an admin raises or lowers them (set_job_limit_ceilings).
  ADD COLUMN job_limit_ceilings jsonb NOT NULL DEFAULT
    '{"memory_mb": 4096, "cpu_seconds": 86400, "max_processes": 4096, "file_size_mb": 10240, "open_files": 65536}'
    CHECK (jsonb_typeof(job_limit_ceilings) = 'object'),
  -- Whether sessions that act only for themselves may give their jobs network access.
  ADD COLUMN job_network_allowed boolean NOT NULL DEFAULT false;

-- How the worker isolates command jobs ('bwrap', 'rlimits', 'none', or why it refuses them), and
-- which of those an attempt of a command ran under (NULL for a task, which runs in-process).
ALTER TABLE pgsched.workers ADD COLUMN sandbox text;
ALTER TABLE pgsched.run_attempts ADD COLUMN sandbox text;

-- Raises 22023 naming p_field unless p_key names a limit and p_value is a whole number from the
-- limit's floor (below it a shell cannot start) to p_max; p_max_is says where p_max comes from.
CREATE FUNCTION pgsched._check_job_limit(
  p_field text, p_key text, p_value jsonb, p_max numeric, p_max_is text
) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
  lowest integer := CASE p_key WHEN 'memory_mb' THEN 16 WHEN 'open_files' THEN 16 ELSE 1 END;
BEGIN
  IF p_key NOT IN ('memory_mb', 'cpu_seconds', 'max_processes', 'file_size_mb', 'open_files') THEN
    PERFORM pgsched._invalid(p_field,
      'unknown limit; give memory_mb, cpu_seconds, max_processes, file_size_mb or open_files');
  END IF;
  IF jsonb_typeof(p_value) <> 'number'
      OR (p_value #>> '{}')::numeric <> trunc((p_value #>> '{}')::numeric) THEN
    PERFORM pgsched._invalid(p_field, 'must be a whole number');
  END IF;
  IF (p_value #>> '{}')::numeric NOT BETWEEN lowest AND p_max THEN
    PERFORM pgsched._invalid(p_field, format('must be from %s to %s%s', lowest, p_max, p_max_is));
  END IF;
END
$$;

/**
 * Checks a command job's limits against the ceilings and its network flag against who may grant
 * it; raises 22023 naming the field (e.g. 'limits.memory_mb'), or 42501 for network access the
 * session may not give.
 */
CREATE FUNCTION pgsched._check_sandbox(p_limits jsonb, p_network boolean, p_is_command boolean)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
  s pgsched.settings;
  k text;
  v jsonb;
BEGIN
  IF p_limits IS NOT NULL AND jsonb_typeof(p_limits) <> 'object' THEN
    PERFORM pgsched._invalid('limits',
      'must be an object of memory_mb, cpu_seconds, max_processes, file_size_mb, open_files');
  END IF;
  IF coalesce(p_limits, '{}') <> '{}' AND NOT p_is_command THEN
    PERFORM pgsched._invalid('limits', 'applies to a command only');
  END IF;
  IF coalesce(p_network, false) AND NOT p_is_command THEN
    PERFORM pgsched._invalid('network', 'applies to a command only');
  END IF;
  SELECT * INTO s FROM pgsched.settings;
  FOR k, v IN SELECT * FROM jsonb_each(coalesce(p_limits, '{}')) LOOP
    PERFORM pgsched._check_job_limit('limits.' || k, k, v,
      (s.job_limit_ceilings ->> k)::numeric, ' (the ceiling an admin set)');
  END LOOP;
  IF coalesce(p_network, false) AND NOT s.job_network_allowed AND NOT pgsched._acts_for_anyone() THEN
    RAISE EXCEPTION 'pgsched: network: only an admin may give a job network access'
      USING ERRCODE = '42501', COLUMN = 'network',
        HINT = 'an admin may allow it for everyone: pgsched.set_job_limit_ceilings(network_allowed => true)';
  END IF;
END
$$;

-- Raises 22023 naming p_field unless p_at is between 1970 and 9999: earlier instants are typos
-- (a run in the past starts now anyway), later ones cannot be printed as ISO 8601.
CREATE FUNCTION pgsched._check_time(p_field text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF p_at < '1970-01-01T00:00:00Z' OR p_at >= '10000-01-01T00:00:00Z' THEN
    PERFORM pgsched._invalid(p_field, 'must be between 1970-01-01 and 9999-12-31');
  END IF;
END
$$;

-- Stores a just-created job's limits and network flag. A job returned for a repeated idempotency
-- key was created by an earlier transaction (an older created_at) and keeps its own.
CREATE FUNCTION pgsched._store_sandbox(p_job_id bigint, p_limits jsonb, p_network boolean)
RETURNS void
LANGUAGE sql AS $$
  UPDATE pgsched.jobs j SET limits = coalesce(p_limits, '{}'), network = coalesce(p_network, false)
  WHERE j.id = p_job_id AND j.created_at = now()
    AND (coalesce(p_limits, '{}') <> '{}' OR coalesce(p_network, false))
$$;

DROP FUNCTION pgsched.submit_job(text, text, text, jsonb, text, text, timestamptz, integer,
  integer, integer, integer, text, text, text, text, bigint[], text);

/**
 * Submits a job in the caller's transaction and returns its id. A one-off job (no schedule) gets
 * its run at run_at (default now); a scheduled job's first tick is planned by the scheduler,
 * which this wakes with NOTIFY. depends_on lists jobs that must succeed first (see the README's
 * dependency rule); concurrency_policy ('allow', 'forbid', 'replace') says what a recurring job's
 * tick does while its previous run is unfinished. limits ({"memory_mb": …, "cpu_seconds": …,
 * "max_processes": …, "file_size_mb": …, "open_files": …}) bound a command job within the
 * ceilings an admin set; network => true gives it network access (admins, or everyone when an
 * admin allowed it). The same idempotency_key from the same owner returns the first job. Refused
 * at degradation level 4 (PS503) and over the rate limit (PS429).
 */
CREATE FUNCTION pgsched.submit_job(
  name text DEFAULT NULL,
  command text DEFAULT NULL,
  task text DEFAULT NULL,
  payload jsonb DEFAULT NULL,
  schedule text DEFAULT NULL,
  timezone text DEFAULT 'UTC',
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT 5,
  max_retries integer DEFAULT 3,
  backoff_base_seconds integer DEFAULT 60,
  timeout_seconds integer DEFAULT 3600,
  queue text DEFAULT NULL,
  idempotency_key text DEFAULT NULL,
  owner text DEFAULT session_user,
  traceparent text DEFAULT NULL,
  depends_on bigint[] DEFAULT '{}',
  concurrency_policy text DEFAULT 'allow',
  limits jsonb DEFAULT '{}',
  network boolean DEFAULT false
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  id bigint;
BEGIN
  PERFORM pgsched._refuse_if_degraded();
  PERFORM pgsched._limit_sql_submissions(submit_job.owner, 1);
  PERFORM pgsched._check_time('run_at', submit_job.run_at);
  PERFORM pgsched._check_sandbox(submit_job.limits, submit_job.network,
    submit_job.command IS NOT NULL);
  id := pgsched._submit_job(
    submit_job.name, submit_job.command, submit_job.task, submit_job.payload,
    submit_job.schedule, submit_job.timezone, submit_job.run_at, submit_job.priority,
    submit_job.max_retries, submit_job.backoff_base_seconds, submit_job.timeout_seconds,
    submit_job.queue, submit_job.idempotency_key, submit_job.owner, submit_job.traceparent,
    coalesce(submit_job.depends_on, '{}'), coalesce(submit_job.concurrency_policy, 'allow'));
  PERFORM pgsched._store_sandbox(id, submit_job.limits, submit_job.network);
  RETURN id;
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
CREATE OR REPLACE FUNCTION pgsched.submit_jobs(jobs jsonb, owner text DEFAULT session_user, traceparent text DEFAULT NULL)
RETURNS TABLE (ref text, job_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
  -- Inside a caller's group, the caller enqueues.
  outer_group boolean := coalesce(current_setting('pgsched.defer_enqueue', true) = 'on', false);
  -- Elements that ask for limits or network, by position; the others pass through untouched.
  sandboxed jsonb := '{}';
  e jsonb;
  i integer;
BEGIN
  IF jsonb_typeof(jobs) = 'array' THEN
    -- Set-based, not a loop over every element: most batches ask for neither.
    -- Checked before the element loop casts it: year 0 is not a date Postgres can hold.
    SELECT x.n - 1 INTO i FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x (v, n)
    WHERE jsonb_typeof(x.v -> 'run_at') = 'string' AND x.v ->> 'run_at' ~ '^\d{4}'
      AND left(x.v ->> 'run_at', 4)::integer < 1970
    ORDER BY x.n LIMIT 1;
    IF FOUND THEN
      PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', i), true);
      PERFORM pgsched._invalid('run_at', 'must be between 1970-01-01 and 9999-12-31');
    END IF;
    FOR e, i IN
      SELECT x.v, x.n - 1 FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x (v, n)
      WHERE jsonb_typeof(x.v) = 'object' AND (x.v ? 'limits' OR x.v ? 'network')
      ORDER BY x.n
    LOOP
      PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', i), true);
      IF jsonb_typeof(e -> 'network') NOT IN ('boolean', 'null') THEN
        PERFORM pgsched._invalid('network', 'must be true or false');
      END IF;
      PERFORM pgsched._check_sandbox(nullif(e -> 'limits', 'null'),
        (nullif(e -> 'network', 'null') #>> '{}')::boolean,
        jsonb_typeof(e -> 'command') = 'string');
      sandboxed := sandboxed || jsonb_build_object(i::text, e);
    END LOOP;
    PERFORM set_config('pgsched.field_prefix', '', true);
    IF sandboxed <> '{}' THEN
      -- The element loop knows no limits or network; they are stored once the jobs exist.
      jobs := (SELECT jsonb_agg(CASE WHEN jsonb_typeof(x.v) = 'object' THEN x.v - 'limits' - 'network'
                                     ELSE x.v END ORDER BY x.n)
               FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x (v, n));
    END IF;
  END IF;
  IF NOT outer_group THEN
    PERFORM pgsched._defer_enqueue();
  END IF;
  IF sandboxed = '{}' THEN
    RETURN QUERY SELECT * FROM pgsched._submit_jobs_one_by_one(jobs, owner, traceparent);
  ELSE
    FOR ref, job_id, i IN
      SELECT s.ref, s.job_id, s.n - 1
      FROM pgsched._submit_jobs_one_by_one(jobs, owner, traceparent) WITH ORDINALITY AS s (ref, job_id, n)
    LOOP
      e := sandboxed -> i::text;
      IF e IS NOT NULL THEN
        PERFORM pgsched._store_sandbox(job_id, nullif(e -> 'limits', 'null'),
          (nullif(e -> 'network', 'null') #>> '{}')::boolean);
      END IF;
      RETURN NEXT;
    END LOOP;
  END IF;
  IF NOT outer_group THEN
    PERFORM pgsched._enqueue_deferred();
  END IF;
END
$$;

/**
 * Admins: sets the ceilings on what a submission's limits may ask for (a JSON object of
 * memory_mb, cpu_seconds, max_processes, file_size_mb, open_files; fields not given are kept) and
 * whether sessions that act only for themselves may give their jobs network access (NULL keeps
 * it). Returns the settings as they are now.
 */
CREATE FUNCTION pgsched.set_job_limit_ceilings(ceilings jsonb DEFAULT '{}', network_allowed boolean DEFAULT NULL)
RETURNS TABLE (job_limit_ceilings jsonb, job_network_allowed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  k text;
  v jsonb;
BEGIN
  IF NOT pgsched._acts_for_anyone() THEN
    RAISE EXCEPTION 'pgsched: only an admin may set job limit ceilings' USING ERRCODE = '42501';
  END IF;
  IF jsonb_typeof(ceilings) IS DISTINCT FROM 'object' THEN
    PERFORM pgsched._invalid('ceilings', 'must be a JSON object');
  END IF;
  FOR k, v IN SELECT * FROM jsonb_each(ceilings) LOOP
    PERFORM pgsched._check_job_limit(k, k, v, 1000000000, '');
  END LOOP;
  RETURN QUERY
  UPDATE pgsched.settings s
  SET job_limit_ceilings = s.job_limit_ceilings || ceilings,
    job_network_allowed = coalesce(network_allowed, s.job_network_allowed)
  RETURNING s.job_limit_ceilings, s.job_network_allowed;
END
$$;

DROP FUNCTION pgsched.run_start(bigint, integer, text);
DROP FUNCTION pgsched.run_start_many(bigint[], integer[], text);

/**
 * Marks the attempts (p_run_ids[i], p_attempts[i]) running on p_worker and returns what executing
 * them needs, the limits and network flag of command jobs included; an attempt that is no longer
 * current (cancelled, rescued, superseded, its job paused) or a worker declared dead gets no row.
 * Asking again for an attempt already running on the same worker returns it again (a lost answer
 * is retried). A command's attempt records the worker's sandbox.
 */
CREATE FUNCTION pgsched.run_start_many(p_run_ids bigint[], p_attempts integer[], p_worker text)
RETURNS TABLE (
  run_id bigint, job_id bigint, attempt integer, kind text, command text, task text,
  payload jsonb, timeout_seconds integer, traceparent text, limits jsonb, network boolean
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
      coalesce(r.traceparent, j.traceparent) AS traceparent, j.limits, j.network
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

CREATE FUNCTION pgsched.run_start(p_run_id bigint, p_attempt integer, p_worker text)
RETURNS TABLE (
  run_id bigint, job_id bigint, attempt integer, kind text, command text, task text,
  payload jsonb, timeout_seconds integer, traceparent text, limits jsonb, network boolean
)
LANGUAGE sql AS $$
  SELECT * FROM pgsched.run_start_many(ARRAY[p_run_id], ARRAY[p_attempt], p_worker)
$$;

SELECT pgsched._grant_sql_api();
