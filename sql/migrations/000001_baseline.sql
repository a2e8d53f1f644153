-- 000001_init: the pgsched schema, its tables and the public SQL API.
-- Cost: creates new objects only; no locks on existing tables, no backfill.
-- Needs Graphile Worker's schema (graphile_worker) to exist: `pgsched migrate` applies it first.

CREATE TABLE pgsched.jobs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  owner text NOT NULL,
  name text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('command', 'task')),
  command text,
  task text,
  payload jsonb,
  schedule text,
  timezone text NOT NULL DEFAULT 'UTC',
  -- The first tick of a schedule is the first one after this instant (set at submission and
  -- whenever the schedule changes or the job resumes), so every process computes the same tick.
  schedule_base_at timestamptz,
  -- Milliseconds, as the planner (JavaScript Dates) reads and compares it back.
  next_run_at timestamptz(3),
  priority smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
  max_retries integer NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 100),
  backoff_base_seconds integer NOT NULL DEFAULT 60 CHECK (backoff_base_seconds BETWEEN 0 AND 86400),
  timeout_seconds integer NOT NULL DEFAULT 3600 CHECK (timeout_seconds BETWEEN 1 AND 604800),
  queue text,
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'completed', 'cancelled')),
  idempotency_key text,
  traceparent text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (owner, idempotency_key),
  CHECK ((kind = 'command') = (command IS NOT NULL)),
  CHECK ((kind = 'task') = (task IS NOT NULL))
);

CREATE INDEX jobs_due_idx ON pgsched.jobs (next_run_at NULLS FIRST)
  WHERE status = 'active' AND schedule IS NOT NULL;
CREATE INDEX jobs_owner_idx ON pgsched.jobs (owner, id);

CREATE TABLE pgsched.runs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id bigint NOT NULL REFERENCES pgsched.jobs (id) ON DELETE CASCADE,
  scheduled_for timestamptz NOT NULL,
  status text NOT NULL DEFAULT 'queued' CHECK (
    status IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled', 'skipped')
  ),
  attempt integer NOT NULL DEFAULT 1,
  -- When the current attempt may start (run_at of its executor job).
  available_at timestamptz NOT NULL DEFAULT now(),
  executor_job_id bigint,
  worker text,
  started_at timestamptz,
  finished_at timestamptz,
  exit_code integer,
  output text,
  error text,
  traceparent text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (job_id, scheduled_for)
);

CREATE INDEX runs_job_idx ON pgsched.runs (job_id, id);
CREATE INDEX runs_dead_idx ON pgsched.runs (id) WHERE status = 'dead';

-- One row per execution attempt of a run: the history an operator reads after a failure.
CREATE TABLE pgsched.run_attempts (
  run_id bigint NOT NULL REFERENCES pgsched.runs (id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  worker text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  outcome text NOT NULL DEFAULT 'running' CHECK (
    outcome IN ('running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost')
  ),
  exit_code integer,
  error text,
  PRIMARY KEY (run_id, attempt)
);

-- Append-only log of every run transition, written by a trigger so that no path can skip it.
CREATE TABLE pgsched.run_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id bigint NOT NULL REFERENCES pgsched.runs (id) ON DELETE CASCADE,
  at timestamptz NOT NULL DEFAULT now(),
  from_status text,
  to_status text NOT NULL,
  attempt integer NOT NULL,
  worker text,
  error text
);

CREATE INDEX run_events_run_idx ON pgsched.run_events (run_id, id);

CREATE FUNCTION pgsched._log_run_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO pgsched.run_events (run_id, from_status, to_status, attempt, worker, error)
  VALUES (
    NEW.id,
    CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
    NEW.status, NEW.attempt, NEW.worker, NEW.error
  );
  RETURN NULL;
END
$$;

CREATE TRIGGER runs_log_insert AFTER INSERT ON pgsched.runs
  FOR EACH ROW EXECUTE FUNCTION pgsched._log_run_transition();
CREATE TRIGGER runs_log_update AFTER UPDATE OF status, attempt ON pgsched.runs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempt <> NEW.attempt)
  EXECUTE FUNCTION pgsched._log_run_transition();

-- The scheduler leader, for operators: the advisory lock decides leadership, this row reports it.
CREATE TABLE pgsched.leader (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  holder text NOT NULL,
  term bigint NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------------------------
-- Validation. Each check raises SQLSTATE 22023 with COLUMN set to the argument at fault, which
-- the REST API turns into a problem+json naming the field.
------------------------------------------------------------------------------------------------

CREATE FUNCTION pgsched._invalid(field text, message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'pgsched: %: %', field, message USING ERRCODE = '22023', COLUMN = field;
END
$$;

-- Whether the session may act on other owners' jobs: the schema owner (the API connects as it),
-- a superuser, or a member of pgsched_admin. Other roles (pgsched_submitter) act on their own.
CREATE FUNCTION pgsched._acts_for_anyone() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT session_user::regrole = (SELECT nspowner FROM pg_namespace WHERE nspname = 'pgsched')::regrole
    OR (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
    OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_admin')
        AND pg_has_role(session_user, 'pgsched_admin', 'MEMBER'))
$$;

-- Raises 42501 unless the session may act on a job owned by p_owner.
CREATE FUNCTION pgsched._check_owner(p_owner text, what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF p_owner IS DISTINCT FROM session_user::text AND NOT pgsched._acts_for_anyone() THEN
    RAISE EXCEPTION 'pgsched: % belongs to another owner; % may act only on its own jobs', what, session_user
      USING ERRCODE = '42501';
  END IF;
END
$$;

-- Raises 42501 unless the session may act on job p_job_id (see _check_owner).
CREATE FUNCTION pgsched._check_job_owner(p_job_id bigint) RETURNS void
LANGUAGE sql STABLE AS $$
  SELECT pgsched._check_owner((SELECT owner FROM pgsched.jobs WHERE id = p_job_id), format('job %s', p_job_id))
$$;

-- The values one cron field names, or NULL when it is malformed. Accepts what cron-parser
-- accepts in its common form: *, ?, numbers, month and weekday names, ranges, steps and lists.
-- L, W, # and H are refused so that the scheduler (cron-parser) never meets an expression this
-- check let through but cannot plan.
CREATE FUNCTION pgsched._cron_values(field text, lo integer, hi integer, names text[])
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  item text;
  m text[];
  a integer;
  b integer;
  step integer;
  vals integer[] := '{}';
BEGIN
  FOREACH item IN ARRAY string_to_array(lower(field), ',') LOOP
    m := regexp_match(item, '^(\*|\?|([0-9]+|[a-z]{3})(-([0-9]+|[a-z]{3}))?)(/([0-9]+))?$');
    IF m IS NULL THEN RETURN NULL; END IF;
    step := coalesce(m[6]::integer, 1);
    IF step = 0 THEN RETURN NULL; END IF;
    IF m[2] IS NULL THEN
      a := lo;
      b := hi;
    ELSE
      -- Names count from 1 for months (lo = 1) and from 0 for weekdays.
      a := CASE WHEN m[2] ~ '^[0-9]+$' THEN m[2]::integer ELSE array_position(names, m[2]) - 1 + lo END;
      b := CASE WHEN m[4] IS NOT NULL
                  THEN CASE WHEN m[4] ~ '^[0-9]+$' THEN m[4]::integer ELSE array_position(names, m[4]) - 1 + lo END
                WHEN m[6] IS NOT NULL THEN hi
                ELSE a END;
      IF a IS NULL OR b IS NULL OR a < lo OR b > hi OR a > b THEN RETURN NULL; END IF;
    END IF;
    vals := vals || ARRAY(SELECT generate_series(a, b, step));
  END LOOP;
  RETURN vals;
END
$$;

/** Raises unless expr is a 5-field (minute first) or 6-field (second first) cron expression. */
CREATE FUNCTION pgsched.validate_cron(expr text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  f text[] := regexp_split_to_array(btrim(expr), '\s+');
  months text[] := '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}';
  days text[] := '{sun,mon,tue,wed,thu,fri,sat}';
BEGIN
  IF expr IN ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@hourly') THEN
    RETURN;
  END IF;
  IF cardinality(f) = 5 THEN
    f := ARRAY['0'] || f;
  ELSIF cardinality(f) <> 6 THEN
    PERFORM pgsched._invalid('schedule',
      format('%L is not a cron expression: expected 5 fields (minute hour day month weekday) or 6 (with seconds first), got %s', expr, cardinality(f)));
  END IF;
  IF pgsched._cron_values(f[1], 0, 59, '{}') IS NULL THEN
    PERFORM pgsched._invalid('schedule', format('bad seconds field %L in %L', f[1], expr));
  ELSIF pgsched._cron_values(f[2], 0, 59, '{}') IS NULL THEN
    PERFORM pgsched._invalid('schedule', format('bad minute field %L in %L', f[2], expr));
  ELSIF pgsched._cron_values(f[3], 0, 23, '{}') IS NULL THEN
    PERFORM pgsched._invalid('schedule', format('bad hour field %L in %L', f[3], expr));
  ELSIF pgsched._cron_values(f[4], 1, 31, '{}') IS NULL THEN
    PERFORM pgsched._invalid('schedule', format('bad day-of-month field %L in %L', f[4], expr));
  ELSIF pgsched._cron_values(f[5], 1, 12, months) IS NULL THEN
    PERFORM pgsched._invalid('schedule', format('bad month field %L in %L', f[5], expr));
  ELSIF pgsched._cron_values(f[6], 0, 7, days) IS NULL THEN
    PERFORM pgsched._invalid('schedule', format('bad day-of-week field %L in %L', f[6], expr));
  -- As cron-parser: with any weekday, some listed day of month must exist in some listed month.
  ELSIF f[6] IN ('*', '?') AND (SELECT min(d) FROM unnest(pgsched._cron_values(f[4], 1, 31, '{}')) d)
      > (SELECT max((ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[mo])
         FROM unnest(pgsched._cron_values(f[5], 1, 12, months)) mo) THEN
    PERFORM pgsched._invalid('schedule', format('%L never fires: no listed month has that day', expr));
  END IF;
END
$$;

/** Raises unless tz is an IANA time zone name Postgres knows. */
CREATE FUNCTION pgsched._validate_timezone(tz text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF tz IS NULL OR NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = tz) THEN
    PERFORM pgsched._invalid('timezone', format('%L is not an IANA time zone name', tz));
  END IF;
END
$$;

------------------------------------------------------------------------------------------------
-- Enqueue. A run and its executor job are created in the same transaction (architecture §1.3).
------------------------------------------------------------------------------------------------

-- Hands the run's current attempt to Graphile Worker. pgsched owns retries, so each attempt is
-- one executor job with max_attempts = 1; priorities 8-10 carry the 'low' flag so a degraded
-- system can skip them with forbiddenFlags.
CREATE FUNCTION pgsched._enqueue_attempt(p_run_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  r pgsched.runs;
  j pgsched.jobs;
  gw_id bigint;
BEGIN
  SELECT * INTO r FROM pgsched.runs WHERE id = p_run_id;
  SELECT * INTO j FROM pgsched.jobs WHERE id = r.job_id;
  SELECT (graphile_worker.add_job(
    'pgsched_run',
    json_build_object('run_id', r.id, 'attempt', r.attempt),
    queue_name => CASE WHEN j.queue IS NOT NULL THEN 'pgsched:' || j.queue END,
    run_at => r.available_at,
    max_attempts => 1,
    job_key => 'pgsched_run:' || r.id,
    priority => j.priority,
    flags => CASE WHEN j.priority >= 8 THEN ARRAY['low'] END
  )).id INTO gw_id;
  UPDATE pgsched.runs SET executor_job_id = gw_id WHERE id = p_run_id;
END
$$;

-- Creates the run of job p_job_id for the occurrence p_scheduled_for and enqueues it, unless that
-- occurrence already has a run: unique (job_id, scheduled_for) makes a tick fire at most once.
-- Returns the new run's id, or NULL when the occurrence existed.
CREATE FUNCTION pgsched._create_run(p_job_id bigint, p_scheduled_for timestamptz, p_traceparent text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  new_id bigint;
BEGIN
  INSERT INTO pgsched.runs (job_id, scheduled_for, available_at, traceparent)
  VALUES (p_job_id, p_scheduled_for, greatest(p_scheduled_for, now()), p_traceparent)
  ON CONFLICT (job_id, scheduled_for) DO NOTHING
  RETURNING id INTO new_id;
  IF new_id IS NOT NULL THEN
    PERFORM pgsched._enqueue_attempt(new_id);
  END IF;
  RETURN new_id;
END
$$;

------------------------------------------------------------------------------------------------
-- The public SQL API. REST submissions call these same functions.
------------------------------------------------------------------------------------------------

/**
 * Submits a job in the caller's transaction and returns its id. A one-off job (no schedule) gets
 * its run at run_at (default now); a scheduled job's first tick is planned by the scheduler,
 * which this wakes with NOTIFY. The same idempotency_key from the same owner returns the first job.
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
  traceparent text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  job_id bigint;
  p_tz text := coalesce(submit_job.timezone, 'UTC');
BEGIN
  IF submit_job.owner IS NULL OR length(submit_job.owner) = 0 THEN
    PERFORM pgsched._invalid('owner', 'is required');
  END IF;
  PERFORM pgsched._check_owner(submit_job.owner, format('owner %L', submit_job.owner));
  IF submit_job.idempotency_key IS NOT NULL THEN
    SELECT j.id INTO job_id FROM pgsched.jobs j
    WHERE j.owner = submit_job.owner AND j.idempotency_key = submit_job.idempotency_key;
    IF job_id IS NOT NULL THEN RETURN job_id; END IF;
    IF length(submit_job.idempotency_key) > 200 THEN
      PERFORM pgsched._invalid('idempotency_key', 'must be at most 200 characters');
    END IF;
  END IF;

  IF submit_job.name IS NULL OR length(btrim(submit_job.name)) = 0 THEN
    PERFORM pgsched._invalid('name', 'is required');
  ELSIF length(submit_job.name) > 200 THEN
    PERFORM pgsched._invalid('name', 'must be at most 200 characters');
  END IF;
  IF (submit_job.command IS NULL) = (submit_job.task IS NULL) THEN
    PERFORM pgsched._invalid('command', 'give exactly one of command (a shell string) or task (a handler name)');
  END IF;
  IF submit_job.command IS NOT NULL AND length(btrim(submit_job.command)) = 0 THEN
    PERFORM pgsched._invalid('command', 'must not be empty');
  END IF;
  IF submit_job.task IS NOT NULL AND submit_job.task !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
    PERFORM pgsched._invalid('task', 'must be 1-100 characters of letters, digits, _ . : -');
  END IF;
  IF submit_job.payload IS NOT NULL AND submit_job.command IS NOT NULL THEN
    PERFORM pgsched._invalid('payload', 'only a task takes a payload');
  END IF;
  IF submit_job.schedule IS NOT NULL AND submit_job.run_at IS NOT NULL THEN
    PERFORM pgsched._invalid('run_at', 'give at most one of schedule or run_at');
  END IF;
  IF submit_job.schedule IS NOT NULL THEN
    PERFORM pgsched.validate_cron(submit_job.schedule);
  END IF;
  PERFORM pgsched._validate_timezone(p_tz);
  IF submit_job.priority IS NULL OR submit_job.priority NOT BETWEEN 1 AND 10 THEN
    PERFORM pgsched._invalid('priority', 'must be between 1 (most urgent) and 10');
  END IF;
  IF submit_job.max_retries IS NULL OR submit_job.max_retries NOT BETWEEN 0 AND 100 THEN
    PERFORM pgsched._invalid('max_retries', 'must be between 0 and 100');
  END IF;
  IF submit_job.backoff_base_seconds IS NULL OR submit_job.backoff_base_seconds NOT BETWEEN 0 AND 86400 THEN
    PERFORM pgsched._invalid('backoff_base_seconds', 'must be between 0 and 86400');
  END IF;
  IF submit_job.timeout_seconds IS NULL OR submit_job.timeout_seconds NOT BETWEEN 1 AND 604800 THEN
    PERFORM pgsched._invalid('timeout_seconds', 'must be between 1 and 604800 (7 days)');
  END IF;
  IF submit_job.queue IS NOT NULL AND submit_job.queue !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
    PERFORM pgsched._invalid('queue', 'must be 1-100 characters of letters, digits, _ . : -');
  END IF;

  INSERT INTO pgsched.jobs AS j (
    owner, name, kind, command, task, payload, schedule, timezone, schedule_base_at,
    priority, max_retries, backoff_base_seconds, timeout_seconds, queue, idempotency_key, traceparent
  ) VALUES (
    submit_job.owner, submit_job.name,
    CASE WHEN submit_job.command IS NOT NULL THEN 'command' ELSE 'task' END,
    submit_job.command, submit_job.task, submit_job.payload,
    btrim(submit_job.schedule), p_tz,
    CASE WHEN submit_job.schedule IS NOT NULL THEN now() END,
    submit_job.priority, submit_job.max_retries, submit_job.backoff_base_seconds,
    submit_job.timeout_seconds, submit_job.queue, submit_job.idempotency_key, submit_job.traceparent
  )
  -- A concurrent submission with the same key won the race: return its job.
  ON CONFLICT (owner, idempotency_key) DO NOTHING
  RETURNING j.id INTO job_id;
  IF job_id IS NULL THEN
    SELECT j.id INTO job_id FROM pgsched.jobs j
    WHERE j.owner = submit_job.owner AND j.idempotency_key = submit_job.idempotency_key;
    RETURN job_id;
  END IF;

  IF submit_job.schedule IS NULL THEN
    PERFORM pgsched._create_run(job_id, coalesce(submit_job.run_at, now()), submit_job.traceparent);
  ELSE
    PERFORM pg_notify('pgsched_scheduler', job_id::text);
  END IF;
  RETURN job_id;
END
$$;

/**
 * Cancels a job: no further runs; its waiting, queued and retrying runs become cancelled, and a
 * running one is cancelled and its worker told (NOTIFY pgsched_cancel) to stop the process.
 * Returns false when the job does not exist or had already ended.
 */
CREATE FUNCTION pgsched.cancel_job(job_id bigint) RETURNS boolean
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
    PERFORM graphile_worker.remove_job('pgsched_run:' || r.id);
    PERFORM pg_notify('pgsched_cancel', json_build_object('run_id', r.id, 'attempt', r.attempt)::text);
  END LOOP;
  RETURN true;
END
$$;

/** Stops a job from creating runs; its queued runs are held until resume_job. */
CREATE FUNCTION pgsched.pause_job(job_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pgsched._check_job_owner(pause_job.job_id);
  UPDATE pgsched.jobs j SET status = 'paused', updated_at = now()
  WHERE j.id = pause_job.job_id AND j.status = 'active';
  IF NOT FOUND THEN RETURN false; END IF;
  PERFORM graphile_worker.remove_job('pgsched_run:' || id)
  FROM pgsched.runs WHERE runs.job_id = pause_job.job_id AND status IN ('queued', 'failed');
  RETURN true;
END
$$;

/**
 * Resumes a paused job: held runs are enqueued again, and a schedule starts from now on
 * (ticks missed while paused are not fired).
 */
CREATE FUNCTION pgsched.resume_job(job_id bigint) RETURNS boolean
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
CREATE FUNCTION pgsched.set_job_schedule(job_id bigint, schedule text, timezone text DEFAULT 'UTC')
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
CREATE FUNCTION pgsched.trigger_job(job_id bigint) RETURNS bigint
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

/** Replays a dead-lettered run: it gets one more attempt, now. Returns false unless it was dead. */
CREATE FUNCTION pgsched.retry_run(run_id bigint) RETURNS boolean
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

------------------------------------------------------------------------------------------------
-- Execution. Called by workers; every write is fenced on (run, attempt, status).
------------------------------------------------------------------------------------------------

/**
 * Marks attempt p_attempt of a run as running on p_worker and returns what to execute. Returns no
 * row when the attempt is no longer current (cancelled, replaced, or its job paused). Calling it
 * again from the same worker (its first answer was lost) returns the same attempt.
 */
CREATE FUNCTION pgsched.run_start(p_run_id bigint, p_attempt integer, p_worker text)
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
 * Records the result of attempt p_attempt in one transaction: success finishes the run; failure
 * re-enqueues the next attempt after backoff (base × 2^(attempt-1)) while retries remain, and
 * otherwise dead-letters the run. Returns the run's new status, or NULL when the attempt is no
 * longer current (a late result from a zombie worker is logged as an event and dropped).
 */
CREATE FUNCTION pgsched.run_finish(
  p_run_id bigint, p_attempt integer, p_worker text, p_outcome text,
  p_exit_code integer DEFAULT NULL, p_output text DEFAULT NULL, p_error text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgsched.runs;
  j pgsched.jobs;
  new_status text;
BEGIN
  IF p_outcome NOT IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost') THEN
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

  new_status := CASE
    WHEN p_outcome = 'succeeded' THEN 'succeeded'
    WHEN p_outcome = 'cancelled' THEN 'cancelled'
    WHEN r.attempt <= j.max_retries THEN 'failed'
    ELSE 'dead'
  END;

  UPDATE pgsched.runs
  SET status = new_status, exit_code = p_exit_code, output = p_output, error = p_error,
    finished_at = CASE WHEN new_status <> 'failed' THEN now() END, updated_at = now(),
    attempt = CASE WHEN new_status = 'failed' THEN attempt + 1 ELSE attempt END,
    available_at = CASE WHEN new_status = 'failed'
      THEN now() + make_interval(secs => j.backoff_base_seconds * power(2, r.attempt - 1))
      ELSE available_at END
  WHERE id = p_run_id;

  IF new_status = 'failed' THEN
    PERFORM pgsched._enqueue_attempt(p_run_id);
  ELSIF j.schedule IS NULL AND j.status = 'active' AND NOT EXISTS (
    SELECT 1 FROM pgsched.runs WHERE runs.job_id = j.id AND status IN ('waiting', 'queued', 'running', 'failed')
  ) THEN
    UPDATE pgsched.jobs SET status = 'completed', updated_at = now() WHERE id = j.id;
  END IF;
  RETURN new_status;
END
$$;

------------------------------------------------------------------------------------------------
-- Scheduling. Called by the leader; safe under a double leader (row locks + unique occurrence).
------------------------------------------------------------------------------------------------

/**
 * Fires ticks planned by the scheduler: for each job, creates the run for its tick (at most once
 * per (job, tick)) and moves next_run_at on, but only while next_run_at is still the value the
 * planner read (p_expected), so a stale planner changes nothing. Returns the number of runs created.
 */
CREATE FUNCTION pgsched.fire_ticks(
  p_job_ids bigint[], p_expected timestamptz[], p_ticks timestamptz[], p_next timestamptz[]
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  t record;
  created integer := 0;
BEGIN
  FOR t IN
    UPDATE pgsched.jobs j SET next_run_at = u.next_at, updated_at = now()
    FROM unnest(p_job_ids, p_expected, p_ticks, p_next) AS u(job_id, expected, tick, next_at)
    WHERE j.id = u.job_id AND j.status = 'active'
      AND j.next_run_at IS NOT DISTINCT FROM u.expected
    RETURNING j.id, u.tick, j.traceparent
  LOOP
    IF t.tick IS NOT NULL AND pgsched._create_run(t.id, t.tick, t.traceparent) IS NOT NULL THEN
      created := created + 1;
    END IF;
  END LOOP;
  RETURN created;
END
$$;
