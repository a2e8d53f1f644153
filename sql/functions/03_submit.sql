-- Submission and job management: the public SQL API (SECURITY DEFINER, fixed search_path),
-- which the REST API calls too. Defaults and limits of a submission: src/core/submission-defaults.ts
-- is the table the REST API reads; the DEFAULTs and CHECKs here and on pgsched.jobs must agree
-- with it.

/**
 * Validates and stores one job (no rate limit or degradation check: the public functions do
 * those once per call). Returns the job id; the same idempotency_key from the same owner returns
 * the first job.
 */
CREATE OR REPLACE FUNCTION pgsched._submit_job(
  name text, command text, task text, payload jsonb, schedule text, timezone text,
  run_at timestamptz, priority integer, max_retries integer, backoff_base_seconds integer,
  timeout_seconds integer, queue text, idempotency_key text, owner text, traceparent text,
  depends_on bigint[], concurrency_policy text
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  job_id bigint;
  p_tz text := coalesce(_submit_job.timezone, 'UTC');
  dep bigint;
  dep_owner text;
BEGIN
  IF _submit_job.owner IS NULL OR length(_submit_job.owner) = 0 THEN
    PERFORM pgsched._invalid('owner', 'is required');
  END IF;
  PERFORM pgsched._check_owner(_submit_job.owner, format('owner %L', _submit_job.owner));
  IF _submit_job.idempotency_key IS NOT NULL THEN
    SELECT j.id INTO job_id FROM pgsched.jobs j
    WHERE j.owner = _submit_job.owner AND j.idempotency_key = _submit_job.idempotency_key;
    IF job_id IS NOT NULL THEN RETURN job_id; END IF;
    IF length(_submit_job.idempotency_key) > 200 THEN
      PERFORM pgsched._invalid('idempotency_key', 'must be at most 200 characters');
    END IF;
  END IF;

  IF _submit_job.name IS NULL OR length(btrim(_submit_job.name)) = 0 THEN
    PERFORM pgsched._invalid('name', 'is required');
  ELSIF length(_submit_job.name) > 200 THEN
    PERFORM pgsched._invalid('name', 'must be at most 200 characters');
  END IF;
  IF (_submit_job.command IS NULL) = (_submit_job.task IS NULL) THEN
    PERFORM pgsched._invalid('command', 'give exactly one of command (a shell string) or task (a handler name)');
  END IF;
  IF _submit_job.command IS NOT NULL AND length(btrim(_submit_job.command)) = 0 THEN
    PERFORM pgsched._invalid('command', 'must not be empty');
  END IF;
  IF _submit_job.task IS NOT NULL AND _submit_job.task !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
    PERFORM pgsched._invalid('task', 'must be 1-100 characters of letters, digits, _ . : -');
  END IF;
  IF _submit_job.payload IS NOT NULL AND _submit_job.command IS NOT NULL THEN
    PERFORM pgsched._invalid('payload', 'only a task takes a payload');
  END IF;
  IF _submit_job.schedule IS NOT NULL AND _submit_job.run_at IS NOT NULL THEN
    PERFORM pgsched._invalid('run_at', 'give at most one of schedule or run_at');
  END IF;
  IF _submit_job.schedule IS NOT NULL THEN
    PERFORM pgsched.validate_cron(_submit_job.schedule);
  END IF;
  PERFORM pgsched._validate_timezone(p_tz);
  IF _submit_job.priority IS NULL OR _submit_job.priority NOT BETWEEN 1 AND 10 THEN
    PERFORM pgsched._invalid('priority', 'must be between 1 (most urgent) and 10');
  END IF;
  IF _submit_job.max_retries IS NULL OR _submit_job.max_retries NOT BETWEEN 0 AND 100 THEN
    PERFORM pgsched._invalid('max_retries', 'must be between 0 and 100');
  END IF;
  IF _submit_job.backoff_base_seconds IS NULL OR _submit_job.backoff_base_seconds NOT BETWEEN 0 AND 86400 THEN
    PERFORM pgsched._invalid('backoff_base_seconds', 'must be between 0 and 86400');
  END IF;
  IF _submit_job.timeout_seconds IS NULL OR _submit_job.timeout_seconds NOT BETWEEN 1 AND 604800 THEN
    PERFORM pgsched._invalid('timeout_seconds', 'must be between 1 and 604800 (7 days)');
  END IF;
  IF _submit_job.queue IS NOT NULL AND _submit_job.queue !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
    PERFORM pgsched._invalid('queue', 'must be 1-100 characters of letters, digits, _ . : -');
  END IF;
  IF _submit_job.concurrency_policy IS NULL OR _submit_job.concurrency_policy NOT IN ('allow', 'forbid', 'replace') THEN
    PERFORM pgsched._invalid('concurrency_policy', 'must be allow, forbid or replace');
  ELSIF _submit_job.concurrency_policy <> 'allow' AND _submit_job.schedule IS NULL THEN
    PERFORM pgsched._invalid('concurrency_policy', 'applies to a schedule only');
  END IF;
  IF cardinality(_submit_job.depends_on) > 100 THEN
    PERFORM pgsched._invalid('depends_on', 'at most 100 dependencies');
  END IF;
  FOREACH dep IN ARRAY coalesce(_submit_job.depends_on, '{}') LOOP
    SELECT j.owner INTO dep_owner FROM pgsched.jobs j WHERE j.id = dep;
    -- A job depends only on jobs of its own owner; another owner's job is reported as missing,
    -- as the API does, so ids do not leak.
    IF dep IS NULL OR NOT FOUND OR dep_owner <> _submit_job.owner THEN
      PERFORM pgsched._invalid('depends_on', format('job %s does not exist', coalesce(dep::text, 'null')));
    END IF;
  END LOOP;

  INSERT INTO pgsched.jobs AS j (
    owner, name, kind, command, task, payload, schedule, timezone, schedule_base_at,
    priority, max_retries, backoff_base_seconds, timeout_seconds, queue, idempotency_key,
    traceparent, concurrency_policy
  ) VALUES (
    _submit_job.owner, _submit_job.name,
    CASE WHEN _submit_job.command IS NOT NULL THEN 'command' ELSE 'task' END,
    _submit_job.command, _submit_job.task, _submit_job.payload,
    btrim(_submit_job.schedule), p_tz,
    CASE WHEN _submit_job.schedule IS NOT NULL THEN now() END,
    _submit_job.priority, _submit_job.max_retries, _submit_job.backoff_base_seconds,
    _submit_job.timeout_seconds, _submit_job.queue, _submit_job.idempotency_key,
    _submit_job.traceparent, _submit_job.concurrency_policy
  )
  -- A concurrent submission with the same key won the race: return its job.
  ON CONFLICT (owner, idempotency_key) DO NOTHING
  RETURNING j.id INTO job_id;
  IF job_id IS NULL THEN
    SELECT j.id INTO job_id FROM pgsched.jobs j
    WHERE j.owner = _submit_job.owner AND j.idempotency_key = _submit_job.idempotency_key;
    RETURN job_id;
  END IF;
  INSERT INTO pgsched.job_dependencies (job_id, depends_on)
  SELECT DISTINCT job_id, d FROM unnest(_submit_job.depends_on) d;

  IF _submit_job.schedule IS NULL THEN
    PERFORM pgsched._create_run(job_id, coalesce(_submit_job.run_at, now()), _submit_job.traceparent);
  ELSE
    PERFORM pg_notify('pgsched_scheduler', job_id::text);
  END IF;
  RETURN job_id;
END
$$;

-- Stores a just-created job's limits and network flag. A job returned for a repeated idempotency
-- key was created by an earlier transaction (an older created_at) and keeps its own.
CREATE OR REPLACE FUNCTION pgsched._store_sandbox(p_job_id bigint, p_limits jsonb, p_network boolean)
RETURNS void
LANGUAGE sql AS $$
  UPDATE pgsched.jobs j SET limits = coalesce(p_limits, '{}'), network = coalesce(p_network, false)
  WHERE j.id = p_job_id AND j.created_at = now()
    AND (coalesce(p_limits, '{}') <> '{}' OR coalesce(p_network, false))
$$;

-- The traceparent a submission stores: the argument when given, else the session setting
-- pgsched.traceparent (an instrumented application runs SET LOCAL pgsched.traceparent = '00-…' once
-- per transaction), else NULL (the run's first attempt starts its own trace). Either must be a W3C
-- traceparent of version 00 with non-zero ids, lowercase hex; a malformed one raises 22023 naming
-- traceparent, the argument or the setting, so a caller learns of a broken propagation at once
-- instead of losing its trace silently.
CREATE OR REPLACE FUNCTION pgsched._traceparent(p_given text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
  -- A setting once SET LOCAL in this session reads '' after its transaction, not NULL.
  from_setting text := nullif(current_setting('pgsched.traceparent', true), '');
  tp text := coalesce(p_given, from_setting);
BEGIN
  IF tp IS NULL OR (tp ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
      AND substr(tp, 4, 32) <> repeat('0', 32) AND substr(tp, 37, 16) <> repeat('0', 16)) THEN
    RETURN tp;
  END IF;
  PERFORM pgsched._invalid('traceparent', format(
    '%s %L is not a W3C traceparent: expected 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, lowercase, ids not all zero',
    CASE WHEN p_given IS NULL THEN 'the session setting pgsched.traceparent' ELSE 'the argument' END,
    left(tp, 100)));
  RETURN NULL;
END
$$;

/**
 * Submits a job in the caller's transaction and returns its id. A one-off job (no schedule) gets
 * its run at run_at (default now); a scheduled job's first tick is planned by the scheduler,
 * which this wakes with NOTIFY. depends_on lists jobs that must succeed first (see the README's
 * dependency rule); concurrency_policy ('allow', 'forbid', 'replace') says what a recurring job's
 * tick does while its previous run is unfinished. limits ({"memory_mb": …, "cpu_seconds": …,
 * "max_processes": …, "file_size_mb": …, "open_files": …}) bound a command job within the
 * ceilings an admin set; network => true gives it network access (admins, or everyone when an
 * admin allowed it). The same idempotency_key from the same owner returns the first job. Refused
 * at degradation level 4 (PS503) and over the rate limit (PS429). traceparent (a W3C traceparent,
 * default the session setting pgsched.traceparent, see _traceparent) puts the run's attempts in
 * the caller's trace.
 */
CREATE OR REPLACE FUNCTION pgsched.submit_job(
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
  tp text := pgsched._traceparent(submit_job.traceparent);
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
    submit_job.queue, submit_job.idempotency_key, submit_job.owner, tp,
    coalesce(submit_job.depends_on, '{}'), coalesce(submit_job.concurrency_policy, 'allow'));
  PERFORM pgsched._store_sandbox(id, submit_job.limits, submit_job.network);
  RETURN id;
END
$$;

-- submit_jobs' element loop, with submit_jobs' arguments and result: validates each element,
-- resolves refs in depends_on and submits it through _submit_job. Internal (invoker's rights, not
-- granted): submit_jobs calls it.
CREATE OR REPLACE FUNCTION pgsched._submit_jobs_one_by_one(jobs jsonb, owner text DEFAULT session_user, traceparent text DEFAULT NULL)
RETURNS TABLE (ref text, job_id bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
  n integer;
  i integer;
  e jsonb;
  k text;
  x jsonb;
  refs text[];
  ids bigint[];
  deps bigint[];
  pending integer[];
  progressed boolean;
BEGIN
  IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' THEN
    PERFORM pgsched._invalid('jobs', 'must be a JSON array of jobs');
  END IF;
  n := jsonb_array_length(jobs);
  IF n = 0 OR n > 1000 THEN
    PERFORM pgsched._invalid('jobs', format('must hold 1 to 1000 jobs, got %s', n));
  END IF;
  PERFORM pgsched._refuse_if_degraded();
  PERFORM pgsched._limit_sql_submissions(owner, n);

  refs := array_fill(NULL::text, ARRAY[n]);
  ids := array_fill(NULL::bigint, ARRAY[n]);
  FOR i IN 1..n LOOP
    -- Errors raised for this element name it (pgsched._invalid reads the prefix).
    PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', i - 1), true);
    e := jobs -> (i - 1);
    IF jsonb_typeof(e) IS DISTINCT FROM 'object' THEN
      PERFORM pgsched._invalid('job', 'must be an object');
    END IF;
    FOR k IN SELECT jsonb_object_keys(e) LOOP
      IF k NOT IN ('ref', 'name', 'command', 'task', 'payload', 'schedule', 'timezone', 'run_at',
          'priority', 'max_retries', 'backoff_base_seconds', 'timeout_seconds', 'queue',
          'idempotency_key', 'depends_on', 'concurrency_policy') THEN
        PERFORM pgsched._invalid(k, 'unknown field');
      END IF;
    END LOOP;
    refs[i] := pgsched._json_text(e, 'ref');
    IF refs[i] IS NOT NULL AND (length(refs[i]) NOT BETWEEN 1 AND 100
        OR refs[i] = ANY (refs[1:i - 1])) THEN
      PERFORM pgsched._invalid('ref', format('%L must be 1-100 characters and unique in the batch', refs[i]));
    END IF;
    IF e ? 'depends_on' AND jsonb_typeof(e -> 'depends_on') <> 'array' THEN
      PERFORM pgsched._invalid('depends_on', 'must be an array of job ids and refs');
    END IF;
  END LOOP;
  FOR i IN 1..n LOOP
    PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', i - 1), true);
    FOR x IN SELECT * FROM jsonb_array_elements(coalesce(jobs -> (i - 1) -> 'depends_on', '[]')) LOOP
      IF jsonb_typeof(x) = 'string' AND array_position(refs, x #>> '{}') IS NULL THEN
        PERFORM pgsched._invalid('depends_on', format('no job in this batch has ref %L', x #>> '{}'));
      ELSIF jsonb_typeof(x) = 'number' AND ((x #>> '{}')::numeric <> trunc((x #>> '{}')::numeric)
          OR (x #>> '{}')::numeric NOT BETWEEN 1 AND 9007199254740991) THEN
        PERFORM pgsched._invalid('depends_on', format('%s is not a job id', x));
      ELSIF jsonb_typeof(x) NOT IN ('string', 'number') THEN
        PERFORM pgsched._invalid('depends_on', 'must hold job ids (numbers) and refs (strings)');
      END IF;
    END LOOP;
  END LOOP;

  -- Submit in dependency order: each job after the batch jobs it names.
  pending := ARRAY(SELECT generate_series(1, n));
  WHILE cardinality(pending) > 0 LOOP
    progressed := false;
    FOREACH i IN ARRAY pending LOOP
      e := jobs -> (i - 1);
      CONTINUE WHEN EXISTS (
        SELECT 1 FROM jsonb_array_elements(coalesce(e -> 'depends_on', '[]')) y
        WHERE jsonb_typeof(y) = 'string' AND ids[array_position(refs, y #>> '{}')] IS NULL);
      PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', i - 1), true);
      deps := ARRAY(
        SELECT CASE WHEN jsonb_typeof(y) = 'string' THEN ids[array_position(refs, y #>> '{}')]
                    ELSE (y #>> '{}')::bigint END
        FROM jsonb_array_elements(coalesce(e -> 'depends_on', '[]')) y);
      ids[i] := pgsched._submit_job(
        pgsched._json_text(e, 'name'), pgsched._json_text(e, 'command'),
        pgsched._json_text(e, 'task'), e -> 'payload', pgsched._json_text(e, 'schedule'),
        coalesce(pgsched._json_text(e, 'timezone'), 'UTC'), pgsched._json_time(e, 'run_at'),
        pgsched._json_int(e, 'priority', 5), pgsched._json_int(e, 'max_retries', 3),
        pgsched._json_int(e, 'backoff_base_seconds', 60),
        pgsched._json_int(e, 'timeout_seconds', 3600), pgsched._json_text(e, 'queue'),
        pgsched._json_text(e, 'idempotency_key'), owner, traceparent, deps,
        coalesce(pgsched._json_text(e, 'concurrency_policy'), 'allow'));
      pending := array_remove(pending, i);
      progressed := true;
    END LOOP;
    IF NOT progressed THEN
      PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', pending[1] - 1), true);
      PERFORM pgsched._invalid('depends_on',
        format('the batch has a dependency cycle among refs %s',
          (SELECT string_agg(quote_literal(refs[p]), ', ') FROM unnest(pending) p)));
    END IF;
  END LOOP;
  PERFORM set_config('pgsched.field_prefix', '', true);
  RETURN QUERY SELECT refs[g], ids[g] FROM generate_series(1, n) g;
END
$$;

/**
 * Submits up to 1,000 jobs in the caller's transaction, all or nothing, and returns their ids in
 * order. jobs is a JSON array of objects with submit_job's fields, plus an optional "ref" (a
 * name unique in the batch); "depends_on" may hold job ids and refs of other jobs in the batch,
 * which is how a DAG is submitted at once. Cycles among refs are refused. Errors name the element
 * and field, e.g. COLUMN = 'jobs[3].depends_on'. The rate limit counts every job. The batch's
 * runs are enqueued together at the end. traceparent (or the session setting
 * pgsched.traceparent) applies to every job of the batch, as in submit_job.
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
  traceparent := pgsched._traceparent(traceparent);
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
 * Cancels a job: no further runs; its waiting, queued and retrying runs become cancelled, and a
 * running one is cancelled and its worker told (NOTIFY pgsched_cancel) to stop the process.
 * Returns false when the job does not exist or had already ended.
 */
CREATE OR REPLACE FUNCTION pgsched.cancel_job(job_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
BEGIN
  PERFORM pgsched._check_job_owner(cancel_job.job_id);
  UPDATE pgsched.jobs j SET status = 'cancelled', next_run_at = NULL, updated_at = now()
  WHERE j.id = cancel_job.job_id AND j.status IN ('active', 'paused');
  IF NOT FOUND THEN RETURN false; END IF;
  FOR r IN
    UPDATE pgsched.runs SET status = 'cancelled', finished_at = now(), updated_at = now(),
      error = 'cancelled'
    WHERE runs.job_id = cancel_job.job_id AND status IN ('waiting', 'queued', 'failed', 'running')
    RETURNING id, attempt
  LOOP
    PERFORM graphile_worker.remove_job(pgsched._executor_job_key(r.id));
    PERFORM pg_notify('pgsched_cancel', json_build_object('run_id', r.id, 'attempt', r.attempt)::text);
  END LOOP;
  RETURN true;
END
$$;

/** Stops a job from creating runs; its queued runs are held until resume_job. */
CREATE OR REPLACE FUNCTION pgsched.pause_job(job_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pgsched._check_job_owner(pause_job.job_id);
  UPDATE pgsched.jobs j SET status = 'paused', updated_at = now()
  WHERE j.id = pause_job.job_id AND j.status = 'active';
  IF NOT FOUND THEN RETURN false; END IF;
  PERFORM graphile_worker.remove_job(pgsched._executor_job_key(id))
  FROM pgsched.runs WHERE runs.job_id = pause_job.job_id AND status IN ('queued', 'failed');
  RETURN true;
END
$$;

/**
 * Resumes a paused job: held runs are enqueued again, and a schedule starts from now on
 * (ticks missed while paused are not fired).
 */
CREATE OR REPLACE FUNCTION pgsched.resume_job(job_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pgsched._check_job_owner(resume_job.job_id);
  UPDATE pgsched.jobs j
  SET status = 'active', updated_at = now(),
    schedule_base_at = CASE WHEN j.schedule IS NOT NULL THEN now() END, next_run_at = NULL
  WHERE j.id = resume_job.job_id AND j.status = 'paused';
  IF NOT FOUND THEN RETURN false; END IF;
  PERFORM pgsched._enqueue_attempt(id)
  FROM pgsched.runs WHERE runs.job_id = resume_job.job_id AND status IN ('queued', 'failed');
  PERFORM pg_notify('pgsched_scheduler', resume_job.job_id::text);
  RETURN true;
END
$$;

/**
 * Replaces the schedule (and time zone) of a scheduled job; its next tick is planned afresh from
 * now, and the scheduler is woken. Returns false unless the job exists with a schedule.
 */
CREATE OR REPLACE FUNCTION pgsched.set_job_schedule(job_id bigint, schedule text, timezone text DEFAULT 'UTC')
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pgsched._check_job_owner(set_job_schedule.job_id);
  PERFORM pgsched.validate_cron(set_job_schedule.schedule);
  PERFORM pgsched._validate_timezone(set_job_schedule.timezone);
  UPDATE pgsched.jobs j
  SET schedule = btrim(set_job_schedule.schedule), timezone = set_job_schedule.timezone,
    schedule_base_at = now(), next_run_at = NULL, updated_at = now()
  WHERE j.id = set_job_schedule.job_id AND j.schedule IS NOT NULL;
  IF NOT FOUND THEN RETURN false; END IF;
  PERFORM pg_notify('pgsched_scheduler', set_job_schedule.job_id::text);
  RETURN true;
END
$$;

/** Creates a run of the job now, outside its schedule. Returns the run id. */
CREATE OR REPLACE FUNCTION pgsched.trigger_job(job_id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  j pgsched.jobs;
BEGIN
  SELECT * INTO j FROM pgsched.jobs WHERE id = trigger_job.job_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'pgsched: job % does not exist', trigger_job.job_id USING ERRCODE = 'P0002';
  END IF;
  PERFORM pgsched._check_job_owner(j.id);
  IF j.status NOT IN ('active', 'completed') THEN
    RAISE EXCEPTION 'pgsched: job % is %; resume it before triggering', j.id, j.status
      USING ERRCODE = '55000';
  END IF;
  -- A one-off job that completed becomes active again for the run it is given now.
  UPDATE pgsched.jobs SET status = 'active', updated_at = now() WHERE id = j.id AND status = 'completed';
  RETURN pgsched._create_run(j.id, clock_timestamp());
END
$$;
