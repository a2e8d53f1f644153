-- Submission and job management: the public SQL API (SECURITY DEFINER, fixed search_path),
-- which the REST API calls too. Defaults and limits of a submission: src/core/submission-defaults.ts
-- is the table the REST API reads; the DEFAULTs and CHECKs here and on pgsched.jobs must agree
-- with it.

/**
 * Raises the first thing wrong with a new job's fields (22023 naming the field), in a fixed
 * order: idempotency key, name, command/task, payload, schedule and run_at, time zone, the
 * numbers, queue, concurrency policy, dependencies (p_depends_on: the ids outside the batch;
 * p_dependencies: how many it names in all). The owner and an idempotent replay are the caller's.
 */
CREATE OR REPLACE FUNCTION pgsched._check_job(
  name text, command text, task text, payload jsonb, schedule text, timezone text,
  run_at timestamptz, priority integer, max_retries integer, backoff_base_seconds integer,
  timeout_seconds integer, queue text, idempotency_key text, owner text,
  p_depends_on bigint[], p_dependencies integer, concurrency_policy text
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
  dep bigint;
  dep_owner text;
BEGIN
  IF length(idempotency_key) > 200 THEN
    PERFORM pgsched._invalid('idempotency_key', 'must be at most 200 characters');
  END IF;
  IF name IS NULL OR length(btrim(name)) = 0 THEN
    PERFORM pgsched._invalid('name', 'is required');
  ELSIF length(name) > 200 THEN
    PERFORM pgsched._invalid('name', 'must be at most 200 characters');
  END IF;
  IF (command IS NULL) = (task IS NULL) THEN
    PERFORM pgsched._invalid('command', 'give exactly one of command (a shell string) or task (a handler name)');
  END IF;
  IF command IS NOT NULL AND length(btrim(command)) = 0 THEN
    PERFORM pgsched._invalid('command', 'must not be empty');
  END IF;
  IF task IS NOT NULL AND task !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
    PERFORM pgsched._invalid('task', 'must be 1-100 characters of letters, digits, _ . : -');
  END IF;
  IF payload IS NOT NULL AND command IS NOT NULL THEN
    PERFORM pgsched._invalid('payload', 'only a task takes a payload');
  END IF;
  IF schedule IS NOT NULL AND run_at IS NOT NULL THEN
    PERFORM pgsched._invalid('run_at', 'give at most one of schedule or run_at');
  END IF;
  IF schedule IS NOT NULL THEN
    PERFORM pgsched.validate_cron(schedule);
  END IF;
  PERFORM pgsched._validate_timezone(timezone);
  IF priority IS NULL OR priority NOT BETWEEN 1 AND 10 THEN
    PERFORM pgsched._invalid('priority', 'must be between 1 (most urgent) and 10');
  END IF;
  IF max_retries IS NULL OR max_retries NOT BETWEEN 0 AND 100 THEN
    PERFORM pgsched._invalid('max_retries', 'must be between 0 and 100');
  END IF;
  IF backoff_base_seconds IS NULL OR backoff_base_seconds NOT BETWEEN 0 AND 86400 THEN
    PERFORM pgsched._invalid('backoff_base_seconds', 'must be between 0 and 86400');
  END IF;
  IF timeout_seconds IS NULL OR timeout_seconds NOT BETWEEN 1 AND 604800 THEN
    PERFORM pgsched._invalid('timeout_seconds', 'must be between 1 and 604800 (7 days)');
  END IF;
  IF queue IS NOT NULL AND queue !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
    PERFORM pgsched._invalid('queue', 'must be 1-100 characters of letters, digits, _ . : -');
  END IF;
  IF concurrency_policy IS NULL OR concurrency_policy NOT IN ('allow', 'forbid', 'replace') THEN
    PERFORM pgsched._invalid('concurrency_policy', 'must be allow, forbid or replace');
  ELSIF concurrency_policy <> 'allow' AND schedule IS NULL THEN
    PERFORM pgsched._invalid('concurrency_policy', 'applies to a schedule only');
  END IF;
  IF p_dependencies > 100 THEN
    PERFORM pgsched._invalid('depends_on', 'at most 100 dependencies');
  END IF;
  FOREACH dep IN ARRAY coalesce(p_depends_on, '{}') LOOP
    SELECT j.owner INTO dep_owner FROM pgsched.jobs j WHERE j.id = dep;
    -- A job depends only on jobs of its own owner; another owner's job is reported as missing,
    -- as the API does, so ids do not leak.
    IF dep IS NULL OR NOT FOUND OR dep_owner <> owner THEN
      PERFORM pgsched._invalid('depends_on', format('job %s does not exist', coalesce(dep::text, 'null')));
    END IF;
  END LOOP;
END
$$;

-- Raises unless the session may submit for p_owner (a non-empty owner).
CREATE OR REPLACE FUNCTION pgsched._check_submitter(p_owner text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF p_owner IS NULL OR length(p_owner) = 0 THEN
    PERFORM pgsched._invalid('owner', 'is required');
  END IF;
  PERFORM pgsched._check_owner(p_owner, format('owner %L', p_owner));
END
$$;

/**
 * Validates and stores one job (no rate limit or degradation check: submit_job does those).
 * Returns the job id; the same idempotency_key from the same owner returns the first job.
 */
CREATE OR REPLACE FUNCTION pgsched._submit_job(
  name text, command text, task text, payload jsonb, schedule text, timezone text,
  run_at timestamptz, priority integer, max_retries integer, backoff_base_seconds integer,
  timeout_seconds integer, queue text, idempotency_key text, owner text, traceparent text,
  depends_on bigint[], concurrency_policy text, limits jsonb, network boolean
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  job_id bigint;
  run_id bigint;
  run_available_at timestamptz;
  p_tz text := coalesce(_submit_job.timezone, 'UTC');
BEGIN
  PERFORM pgsched._check_submitter(_submit_job.owner);
  IF _submit_job.idempotency_key IS NOT NULL THEN
    SELECT j.id INTO job_id FROM pgsched.jobs j
    WHERE j.owner = _submit_job.owner AND j.idempotency_key = _submit_job.idempotency_key;
    IF job_id IS NOT NULL THEN RETURN job_id; END IF;
  END IF;
  PERFORM pgsched._check_job(_submit_job.name, _submit_job.command, _submit_job.task,
    _submit_job.payload, _submit_job.schedule, p_tz, _submit_job.run_at, _submit_job.priority,
    _submit_job.max_retries, _submit_job.backoff_base_seconds, _submit_job.timeout_seconds,
    _submit_job.queue, _submit_job.idempotency_key, _submit_job.owner, _submit_job.depends_on,
    cardinality(_submit_job.depends_on), _submit_job.concurrency_policy);

  INSERT INTO pgsched.jobs AS j (
    owner, name, kind, command, task, payload, schedule, timezone, schedule_base_at,
    priority, max_retries, backoff_base_seconds, timeout_seconds, queue, idempotency_key,
    traceparent, concurrency_policy, limits, network
  ) VALUES (
    _submit_job.owner, _submit_job.name,
    CASE WHEN _submit_job.command IS NOT NULL THEN 'command' ELSE 'task' END,
    _submit_job.command, _submit_job.task, _submit_job.payload,
    btrim(_submit_job.schedule), p_tz,
    CASE WHEN _submit_job.schedule IS NOT NULL THEN now() END,
    _submit_job.priority, _submit_job.max_retries, _submit_job.backoff_base_seconds,
    _submit_job.timeout_seconds, _submit_job.queue, _submit_job.idempotency_key,
    _submit_job.traceparent, _submit_job.concurrency_policy,
    coalesce(_submit_job.limits, '{}'), coalesce(_submit_job.network, false)
  )
  -- A concurrent submission with the same key won the race: return its job.
  ON CONFLICT (owner, idempotency_key) DO NOTHING
  RETURNING j.id INTO job_id;
  IF job_id IS NULL THEN
    SELECT j.id INTO job_id FROM pgsched.jobs j
    WHERE j.owner = _submit_job.owner AND j.idempotency_key = _submit_job.idempotency_key;
    RETURN job_id;
  END IF;
  IF cardinality(_submit_job.depends_on) > 0 THEN
    INSERT INTO pgsched.job_dependencies (job_id, depends_on)
    SELECT DISTINCT job_id, d FROM unnest(_submit_job.depends_on) d;
  END IF;

  IF _submit_job.schedule IS NULL AND cardinality(_submit_job.depends_on) = 0 THEN
    -- A one-off job without dependencies: its run is queued at once (what _create_run does for
    -- it, without reading back the job this function has just written).
    INSERT INTO pgsched.runs AS r (job_id, scheduled_for, status, available_at, traceparent)
    VALUES (job_id, coalesce(_submit_job.run_at, now()), 'queued',
      greatest(_submit_job.run_at, now()), _submit_job.traceparent)
    RETURNING r.id, r.available_at INTO run_id, run_available_at;
    IF current_setting('pgsched.defer_enqueue', true) = 'on' THEN
      PERFORM pgsched._enqueue_attempt(run_id);
    ELSE
      PERFORM pgsched._add_executor_job(pgsched._executor_job_spec(run_id, 1, _submit_job.queue,
        run_available_at, _submit_job.priority));
    END IF;
  ELSIF _submit_job.schedule IS NULL THEN
    PERFORM pgsched._create_run(job_id, coalesce(_submit_job.run_at, now()), _submit_job.traceparent);
  ELSE
    PERFORM pg_notify('pgsched_scheduler', job_id::text);
  END IF;
  RETURN job_id;
END
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
    coalesce(submit_job.depends_on, '{}'), coalesce(submit_job.concurrency_policy, 'allow'),
    submit_job.limits, submit_job.network);
  RETURN id;
END
$$;

-- A JSON value as text when it is a string, else NULL.
CREATE OR REPLACE FUNCTION pgsched._json_str(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' END
$$;

-- Whether a batch field holds what _json_text accepts (absent, null or a string).
CREATE OR REPLACE FUNCTION pgsched._json_text_ok(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT v IS NULL OR jsonb_typeof(v) IN ('null', 'string')
$$;

-- The integer a batch field holds, p_default when absent or null, NULL when _json_int would
-- refuse it.
CREATE OR REPLACE FUNCTION pgsched._json_int_or_null(v jsonb, p_default integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN p_default
    WHEN jsonb_typeof(v) <> 'number' THEN NULL
    WHEN (v #>> '{}')::numeric = trunc((v #>> '{}')::numeric)
      AND abs((v #>> '{}')::numeric) <= 2147483647 THEN (v #>> '{}')::integer
  END
$$;

/**
 * A batch's elements with their fields typed (NULL where absent or of the wrong type; the
 * numbers with their defaults, NULL when not an integer), one row per element, n from 1.
 */
CREATE OR REPLACE FUNCTION pgsched._batch_jobs(jobs jsonb)
RETURNS TABLE (
  n integer, v jsonb, ref text, name text, command text, task text, schedule text,
  timezone text, run_at text, priority integer, max_retries integer,
  backoff_base_seconds integer, timeout_seconds integer, queue text, idempotency_key text,
  concurrency_policy text, depends_on jsonb
)
LANGUAGE sql IMMUTABLE AS $$
  SELECT x.n::integer, x.v, pgsched._json_str(x.v -> 'ref'), pgsched._json_str(x.v -> 'name'),
    pgsched._json_str(x.v -> 'command'), pgsched._json_str(x.v -> 'task'),
    pgsched._json_str(x.v -> 'schedule'), coalesce(pgsched._json_str(x.v -> 'timezone'), 'UTC'),
    pgsched._json_str(x.v -> 'run_at'), pgsched._json_int_or_null(x.v -> 'priority', 5),
    pgsched._json_int_or_null(x.v -> 'max_retries', 3),
    pgsched._json_int_or_null(x.v -> 'backoff_base_seconds', 60),
    pgsched._json_int_or_null(x.v -> 'timeout_seconds', 3600), pgsched._json_str(x.v -> 'queue'),
    pgsched._json_str(x.v -> 'idempotency_key'),
    coalesce(pgsched._json_str(x.v -> 'concurrency_policy'), 'allow'),
    CASE WHEN jsonb_typeof(x.v -> 'depends_on') = 'array' THEN x.v -> 'depends_on' ELSE '[]' END
  FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x (v, n)
$$;

-- Raises the first error of a batch's shape, element by element: an element that is not an
-- object, an unknown field, a bad or repeated ref, a depends_on that is not an array or names
-- something that is neither a job id nor a ref of the batch. Called only when the set-based
-- check in _submit_jobs_set found something wrong, to name it exactly.
CREATE OR REPLACE FUNCTION pgsched._check_batch_shape(jobs jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  n integer := jsonb_array_length(jobs);
  i integer;
  e jsonb;
  k text;
  x jsonb;
  refs text[] := array_fill(NULL::text, ARRAY[n]);
BEGIN
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
          'idempotency_key', 'depends_on', 'concurrency_policy', 'limits', 'network') THEN
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
  PERFORM set_config('pgsched.field_prefix', '', true);
END
$$;

-- Raises the first error of batch element e (its fields' types, then, unless it replays an
-- idempotency key, _check_job), exactly as submitting it alone would. Called only for the
-- elements the set-based check could not pass.
CREATE OR REPLACE FUNCTION pgsched._check_batch_job(e jsonb, p_owner text, p_replay boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  -- Evaluated in this order, as the fields are read.
  name text := pgsched._json_text(e, 'name');
  command text := pgsched._json_text(e, 'command');
  task text := pgsched._json_text(e, 'task');
  schedule text := pgsched._json_text(e, 'schedule');
  timezone text := coalesce(pgsched._json_text(e, 'timezone'), 'UTC');
  run_at timestamptz := pgsched._json_time(e, 'run_at');
  priority integer := pgsched._json_int(e, 'priority', 5);
  max_retries integer := pgsched._json_int(e, 'max_retries', 3);
  backoff_base_seconds integer := pgsched._json_int(e, 'backoff_base_seconds', 60);
  timeout_seconds integer := pgsched._json_int(e, 'timeout_seconds', 3600);
  queue text := pgsched._json_text(e, 'queue');
  idempotency_key text := pgsched._json_text(e, 'idempotency_key');
  concurrency_policy text := coalesce(pgsched._json_text(e, 'concurrency_policy'), 'allow');
BEGIN
  IF p_replay THEN RETURN; END IF;
  PERFORM pgsched._check_job(name, command, task, e -> 'payload', schedule, timezone, run_at,
    priority, max_retries, backoff_base_seconds, timeout_seconds, queue, idempotency_key, p_owner,
    ARRAY(SELECT (y #>> '{}')::bigint FROM jsonb_array_elements(coalesce(e -> 'depends_on', '[]')) y
          WHERE jsonb_typeof(y) = 'number'),
    jsonb_array_length(coalesce(e -> 'depends_on', '[]')), concurrency_policy);
END
$$;

/**
 * submit_jobs' body, with its arguments and result, set-based: a few statements for the whole
 * batch whatever its size. Checks run as queries over all elements; only an element they cannot
 * pass is checked again on its own (_check_batch_shape, _check_batch_job) to raise the same error,
 * naming the same field, as submitting it alone; so are scheduled jobs (validate_cron). The jobs
 * are one INSERT, their dependencies one, their runs one, and the queued runs are enqueued by the
 * caller's group. Internal (invoker's rights, not granted): submit_jobs calls it.
 */
CREATE OR REPLACE FUNCTION pgsched._submit_jobs_set(jobs jsonb, owner text DEFAULT session_user, traceparent text DEFAULT NULL)
RETURNS TABLE (ref text, job_id bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
  n integer;
  i integer;
  refs text[];
  -- Per element (index n): whether it repeats an idempotency key (an earlier job, or an earlier
  -- element of the batch), and whether the set-based checks passed it.
  replays boolean[];
  suspects integer[];
  -- Elements that depend, through refs, on a cycle: never submitted.
  resolved boolean[];
  pending integer[];
  dependents integer[];
  dependencies integer[];
  unmet integer[];
  first_edge integer[];
  ready integer[];
  k integer;
  created bigint[];
  fresh boolean[];
  unkeyed bigint[];
  ids bigint[];
  queued bigint[];
  waiting bigint[];
  level smallint;
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

  -- The batch's shape: objects of known fields, unique refs, depends_on naming ids and refs.
  refs := ARRAY(SELECT b.ref FROM pgsched._batch_jobs(jobs) b ORDER BY b.n);
  IF EXISTS (
    SELECT 1 FROM pgsched._batch_jobs(jobs) b
    WHERE CASE WHEN jsonb_typeof(b.v) <> 'object' THEN true ELSE
      EXISTS (SELECT 1 FROM jsonb_object_keys(b.v) AS f (field)
              WHERE f.field NOT IN ('ref', 'name', 'command', 'task', 'payload', 'schedule', 'timezone',
                'run_at', 'priority', 'max_retries', 'backoff_base_seconds', 'timeout_seconds',
                'queue', 'idempotency_key', 'depends_on', 'concurrency_policy', 'limits', 'network'))
      OR NOT pgsched._json_text_ok(b.v -> 'ref')
      OR length(b.ref) NOT BETWEEN 1 AND 100
      OR (b.v ? 'depends_on' AND jsonb_typeof(b.v -> 'depends_on') <> 'array')
      OR EXISTS (SELECT 1 FROM jsonb_array_elements(b.depends_on) y
                 WHERE CASE jsonb_typeof(y)
                   WHEN 'string' THEN array_position(refs, y #>> '{}') IS NULL
                   WHEN 'number' THEN (y #>> '{}')::numeric <> trunc((y #>> '{}')::numeric)
                     OR (y #>> '{}')::numeric NOT BETWEEN 1 AND 9007199254740991
                   ELSE true END)
    END)
    OR (SELECT count(r) <> count(DISTINCT r) FROM unnest(refs) r)
  THEN
    PERFORM pgsched._check_batch_shape(jobs);
  END IF;

  PERFORM set_config('pgsched.field_prefix', 'jobs[0].', true);
  PERFORM pgsched._check_submitter(owner);
  PERFORM set_config('pgsched.field_prefix', '', true);

  -- Refs must form a DAG (Kahn's algorithm over the ref edges): what is never resolved depends
  -- on a cycle.
  resolved := array_fill(true, ARRAY[n]);
  SELECT coalesce(array_agg(e.dependent ORDER BY e.dependency, e.dependent), '{}'),
    coalesce(array_agg(e.dependency ORDER BY e.dependency, e.dependent), '{}')
  INTO dependents, dependencies
  FROM (SELECT b.n AS dependent, array_position(refs, y #>> '{}') AS dependency
        FROM pgsched._batch_jobs(jobs) b CROSS JOIN LATERAL jsonb_array_elements(b.depends_on) y
        WHERE jsonb_typeof(y) = 'string') e;
  IF cardinality(dependents) > 0 THEN
    unmet := array_fill(0, ARRAY[n]);
    first_edge := array_fill(0, ARRAY[n]);
    FOR k IN REVERSE cardinality(dependents)..1 LOOP
      unmet[dependents[k]] := unmet[dependents[k]] + 1;
      first_edge[dependencies[k]] := k;
      resolved[dependents[k]] := false;
    END LOOP;
    ready := ARRAY(SELECT g FROM generate_series(1, n) g WHERE unmet[g] = 0);
    WHILE cardinality(ready) > 0 LOOP
      i := ready[cardinality(ready)];
      ready := ready[1:cardinality(ready) - 1];
      resolved[i] := true;
      k := first_edge[i];
      WHILE k > 0 AND k <= cardinality(dependencies) AND dependencies[k] = i LOOP
        unmet[dependents[k]] := unmet[dependents[k]] - 1;
        IF unmet[dependents[k]] = 0 THEN
          ready := ready || dependents[k];
        END IF;
        k := k + 1;
      END LOOP;
    END LOOP;
  END IF;
  pending := ARRAY(SELECT g FROM generate_series(1, n) g WHERE NOT resolved[g] ORDER BY g);

  -- Every element's fields, checked as one query; the ones it cannot pass, one by one.
  SELECT array_agg(c.replay ORDER BY c.n), coalesce(array_agg(c.n ORDER BY c.n) FILTER (WHERE c.suspect), '{}')
  INTO replays, suspects
  FROM (
    SELECT b.n, b.replay,
      b.n <> ALL (pending) AND (
        -- NULL (a field absent or of another type) is not a pass.
        NOT coalesce(pgsched._json_text_ok(b.v -> 'name') AND pgsched._json_text_ok(b.v -> 'command')
          AND pgsched._json_text_ok(b.v -> 'task') AND pgsched._json_text_ok(b.v -> 'schedule')
          AND pgsched._json_text_ok(b.v -> 'timezone') AND pgsched._json_text_ok(b.v -> 'run_at')
          AND pgsched._json_text_ok(b.v -> 'queue') AND pgsched._json_text_ok(b.v -> 'idempotency_key')
          AND pgsched._json_text_ok(b.v -> 'concurrency_policy')
          AND (b.run_at IS NULL OR b.run_at ~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$')
          AND b.priority IS NOT NULL AND b.max_retries IS NOT NULL
          AND b.backoff_base_seconds IS NOT NULL AND b.timeout_seconds IS NOT NULL, false)
        OR NOT b.replay AND NOT coalesce(
          length(btrim(b.name)) > 0 AND length(b.name) <= 200
          AND (b.command IS NULL) <> (b.task IS NULL)
          AND (b.command IS NULL OR length(btrim(b.command)) > 0)
          AND (b.task IS NULL OR b.task ~ '^[A-Za-z0-9_.:-]{1,100}$')
          AND (b.command IS NULL OR b.v -> 'payload' IS NULL)
          -- A schedule is checked on its own (validate_cron), as is a zone not seen before.
          AND b.schedule IS NULL
          AND EXISTS (SELECT 1 FROM pgsched.timezone_names t WHERE t.name = b.timezone)
          AND b.priority BETWEEN 1 AND 10 AND b.max_retries BETWEEN 0 AND 100
          AND b.backoff_base_seconds BETWEEN 0 AND 86400 AND b.timeout_seconds BETWEEN 1 AND 604800
          AND (b.queue IS NULL OR b.queue ~ '^[A-Za-z0-9_.:-]{1,100}$')
          AND coalesce(length(b.idempotency_key), 0) <= 200
          AND b.concurrency_policy = 'allow'
          AND jsonb_array_length(b.depends_on) <= 100
          AND NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements(b.depends_on) y
            WHERE jsonb_typeof(y) = 'number' AND NOT EXISTS (
              SELECT 1 FROM pgsched.jobs d WHERE d.id = (y #>> '{}')::bigint AND d.owner = owner)), false)
      ) AS suspect
    FROM (
      SELECT b.*, b.idempotency_key IS NOT NULL AND (
          row_number() OVER (PARTITION BY b.idempotency_key ORDER BY b.n) > 1
          OR EXISTS (SELECT 1 FROM pgsched.jobs j
                     WHERE j.owner = owner AND j.idempotency_key = b.idempotency_key)) AS replay
      FROM pgsched._batch_jobs(jobs) b
    ) b
  ) c;
  FOREACH i IN ARRAY suspects LOOP
    PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', i - 1), true);
    PERFORM pgsched._check_batch_job(jobs -> (i - 1), owner, replays[i]);
  END LOOP;
  IF cardinality(pending) > 0 THEN
    PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', pending[1] - 1), true);
    PERFORM pgsched._invalid('depends_on',
      format('the batch has a dependency cycle among refs %s',
        (SELECT string_agg(quote_literal(refs[p]), ', ') FROM unnest(pending) p)));
  END IF;
  PERFORM set_config('pgsched.field_prefix', '', true);

  -- The new jobs, in the batch's order: an identity hands out increasing ids, so the unkeyed
  -- ones are matched to their elements by rank; keyed ones are found by key (a concurrent
  -- submission with the same key may have won the race: the element gets its job).
  WITH ins AS (
    INSERT INTO pgsched.jobs AS j (
      owner, name, kind, command, task, payload, schedule, timezone, schedule_base_at,
      priority, max_retries, backoff_base_seconds, timeout_seconds, queue, idempotency_key,
      traceparent, concurrency_policy, limits, network
    )
    SELECT owner, b.name, CASE WHEN b.command IS NOT NULL THEN 'command' ELSE 'task' END,
      b.command, b.task, b.v -> 'payload', btrim(b.schedule), b.timezone,
      CASE WHEN b.schedule IS NOT NULL THEN now() END,
      b.priority, b.max_retries, b.backoff_base_seconds, b.timeout_seconds, b.queue,
      b.idempotency_key, traceparent, b.concurrency_policy,
      coalesce(nullif(b.v -> 'limits', 'null'), '{}'),
      coalesce((nullif(b.v -> 'network', 'null') #>> '{}')::boolean, false)
    FROM pgsched._batch_jobs(jobs) b
    WHERE NOT replays[b.n]
    ORDER BY b.n
    -- By name: in this function, owner is the argument.
    ON CONFLICT ON CONSTRAINT jobs_owner_idempotency_key_key DO NOTHING
    RETURNING j.id, j.idempotency_key
  )
  SELECT coalesce(array_agg(ins.id), '{}'),
    coalesce(array_agg(ins.id ORDER BY ins.id) FILTER (WHERE ins.idempotency_key IS NULL), '{}')
  INTO created, unkeyed
  FROM ins;
  ids := ARRAY(
    SELECT CASE WHEN b.idempotency_key IS NULL
      THEN unkeyed[count(*) FILTER (WHERE b.idempotency_key IS NULL) OVER (ORDER BY b.n)]
      ELSE (SELECT j.id FROM pgsched.jobs j
            WHERE j.owner = owner AND j.idempotency_key = b.idempotency_key) END
    FROM pgsched._batch_jobs(jobs) b ORDER BY b.n);
  -- Which elements made their job here (not a replay, not beaten to its key).
  fresh := ARRAY(
    SELECT NOT replays[u.n] AND c.id IS NOT NULL
    FROM unnest(ids) WITH ORDINALITY AS u (id, n) LEFT JOIN unnest(created) AS c (id) ON c.id = u.id
    ORDER BY u.n);

  INSERT INTO pgsched.job_dependencies (job_id, depends_on)
  SELECT DISTINCT ids[b.n], CASE WHEN jsonb_typeof(y) = 'string'
    THEN ids[array_position(refs, y #>> '{}')] ELSE (y #>> '{}')::bigint END
  FROM pgsched._batch_jobs(jobs) b CROSS JOIN LATERAL jsonb_array_elements(b.depends_on) y
  WHERE fresh[b.n];

  -- One-off jobs get their runs; a job with dependencies waits (below degradation level 3) and
  -- is resolved at once, like any run created waiting (_create_run).
  level := pgsched._degradation_level();
  WITH r AS (
    INSERT INTO pgsched.runs (job_id, scheduled_for, status, available_at, traceparent)
    SELECT ids[b.n], coalesce(b.run_at::timestamptz, now()),
      CASE WHEN jsonb_array_length(b.depends_on) > 0 AND level < 3 THEN 'waiting' ELSE 'queued' END,
      greatest(coalesce(b.run_at::timestamptz, now()), now()), traceparent
    FROM pgsched._batch_jobs(jobs) b
    WHERE fresh[b.n] AND b.schedule IS NULL
    ORDER BY b.n
    RETURNING id, status
  )
  SELECT coalesce(array_agg(r.id ORDER BY r.id) FILTER (WHERE r.status = 'queued'), '{}'),
    coalesce(array_agg(r.id ORDER BY r.id) FILTER (WHERE r.status = 'waiting'), '{}')
  INTO queued, waiting
  FROM r;
  PERFORM pgsched._enqueue_attempts_later(queued);
  PERFORM pgsched._resolve(w) FROM unnest(waiting) w;
  PERFORM pg_notify('pgsched_scheduler', ids[b.n]::text)
  FROM pgsched._batch_jobs(jobs) b
  WHERE fresh[b.n] AND b.schedule IS NOT NULL;

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
  e jsonb;
  i integer;
BEGIN
  traceparent := pgsched._traceparent(traceparent);
  IF jsonb_typeof(jobs) = 'array' THEN
    -- Checked before the casts: year 0 is not a date Postgres can hold.
    SELECT x.n - 1 INTO i FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x (v, n)
    WHERE jsonb_typeof(x.v -> 'run_at') = 'string' AND x.v ->> 'run_at' ~ '^\d{4}'
      AND left(x.v ->> 'run_at', 4)::integer < 1970
    ORDER BY x.n LIMIT 1;
    IF FOUND THEN
      PERFORM set_config('pgsched.field_prefix', format('jobs[%s].', i), true);
      PERFORM pgsched._invalid('run_at', 'must be between 1970-01-01 and 9999-12-31');
    END IF;
    -- Most batches ask for neither limits nor network: only the elements that do are looked at.
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
    END LOOP;
    PERFORM set_config('pgsched.field_prefix', '', true);
  END IF;
  IF NOT outer_group THEN
    PERFORM pgsched._defer_enqueue();
  END IF;
  RETURN QUERY SELECT * FROM pgsched._submit_jobs_set(jobs, owner, traceparent);
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
