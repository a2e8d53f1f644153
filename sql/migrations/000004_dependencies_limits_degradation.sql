-- 000004_dependencies_limits_degradation: job dependencies and batch submission, overlap policy
-- for recurring jobs, per-owner rate limits, and graceful degradation.
-- Cost: adds a column with a constant default to jobs (no rewrite), new tables and indexes, and
-- replaces functions (_create_run, _invalid, _validate_timezone). submit_job changes signature: it is dropped and created again, and its
-- grants are given again below.

ALTER TABLE pgsched.jobs ADD COLUMN concurrency_policy text NOT NULL DEFAULT 'allow'
  CHECK (concurrency_policy IN ('allow', 'forbid', 'replace'));

-- Edges of the dependency graph: job_id runs only after depends_on has succeeded. Set at
-- submission only, and only towards jobs that already exist (or come earlier in the same batch),
-- so the graph cannot gain a cycle later.
CREATE TABLE pgsched.job_dependencies (
  job_id bigint NOT NULL REFERENCES pgsched.jobs (id) ON DELETE CASCADE,
  depends_on bigint NOT NULL REFERENCES pgsched.jobs (id) ON DELETE CASCADE,
  PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_reverse_idx ON pgsched.job_dependencies (depends_on);
CREATE INDEX runs_status_waiting_idx ON pgsched.runs (id) WHERE status = 'waiting';
CREATE INDEX runs_active_idx ON pgsched.runs (job_id) WHERE status IN ('waiting', 'queued', 'running', 'failed');

-- The degradation level (0 = normal; 1-4 in the design's order) and how it is set.
CREATE TABLE pgsched.degradation (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  mode text NOT NULL DEFAULT 'auto' CHECK (mode IN ('auto', 'manual')),
  level smallint NOT NULL DEFAULT 0 CHECK (level BETWEEN 0 AND 4),
  cause text NOT NULL DEFAULT 'initial state',
  changed_at timestamptz NOT NULL DEFAULT now(),
  warn_queue_depth bigint NOT NULL DEFAULT 5000000 CHECK (warn_queue_depth > 0),
  critical_queue_depth bigint NOT NULL DEFAULT 10000000,
  -- The last measurement of the automatic mode.
  queue_depth bigint,
  measured_at timestamptz,
  -- How often the dependency resolver fell back to promoting without checks (circuit open).
  resolver_fallbacks bigint NOT NULL DEFAULT 0,
  CHECK (critical_queue_depth > warn_queue_depth)
);
INSERT INTO pgsched.degradation DEFAULT VALUES;

-- Every change of level or mode, with its cause: the operator's audit trail.
CREATE TABLE pgsched.degradation_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  from_level smallint NOT NULL,
  to_level smallint NOT NULL,
  mode text NOT NULL,
  cause text NOT NULL,
  actor text NOT NULL
);

-- Settings of the SQL API itself (the REST API takes its own from the environment).
CREATE TABLE pgsched.settings (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  -- Submissions a minute per owner, for sessions that act only for themselves (pgsched_submitter).
  rate_limit_per_minute integer NOT NULL DEFAULT 1000 CHECK (rate_limit_per_minute > 0)
);
INSERT INTO pgsched.settings DEFAULT VALUES;

-- One token bucket per owner, shared by REST and SQL submissions.
CREATE TABLE pgsched.rate_buckets (
  owner text PRIMARY KEY,
  tokens double precision NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Errors name the field at fault; inside a batch, with the element's prefix (e.g. 'jobs[3].').
CREATE OR REPLACE FUNCTION pgsched._invalid(field text, message text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  f text := coalesce(current_setting('pgsched.field_prefix', true), '') || field;
BEGIN
  RAISE EXCEPTION 'pgsched: %: %', f, message USING ERRCODE = '22023', COLUMN = f;
END
$$;

-- Time zone names that passed validation. pg_timezone_names reads the whole time zone database
-- (about 10 ms a call), too slow for every job of a batch; a name is looked up there only once.
CREATE TABLE pgsched.timezone_names (name text PRIMARY KEY);
INSERT INTO pgsched.timezone_names SELECT DISTINCT name FROM pg_timezone_names;

CREATE OR REPLACE FUNCTION pgsched._validate_timezone(tz text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF tz IS NOT NULL AND EXISTS (SELECT 1 FROM pgsched.timezone_names WHERE name = tz) THEN
    RETURN;
  END IF;
  IF tz IS NULL OR NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = tz) THEN
    PERFORM pgsched._invalid('timezone', format('%L is not an IANA time zone name', tz));
  END IF;
  -- A zone added by a newer time zone database than the one seen at migration.
  INSERT INTO pgsched.timezone_names VALUES (tz) ON CONFLICT DO NOTHING;
END
$$;

------------------------------------------------------------------------------------------------
-- Rate limit and degradation guards.
------------------------------------------------------------------------------------------------

/**
 * Takes p_n tokens from p_owner's bucket (capacity and refill p_per_minute a minute) in one
 * atomic upsert. Returns whether they were taken, what is left, and when p_n would be there.
 */
CREATE FUNCTION pgsched.take_submission_tokens(p_owner text, p_n integer, p_per_minute integer)
RETURNS TABLE (allowed boolean, remaining integer, retry_after_seconds integer)
LANGUAGE plpgsql AS $$
DECLARE
  left_after double precision;
  have double precision;
BEGIN
  IF p_n > p_per_minute THEN
    RETURN QUERY SELECT false, 0, NULL::integer;
    RETURN;
  END IF;
  INSERT INTO pgsched.rate_buckets AS b (owner, tokens, updated_at)
  VALUES (p_owner, p_per_minute - p_n, now())
  ON CONFLICT (owner) DO UPDATE SET
    tokens = least(p_per_minute::double precision,
      b.tokens + extract(epoch FROM now() - b.updated_at) * p_per_minute / 60.0) - p_n,
    updated_at = now()
  WHERE least(p_per_minute::double precision,
      b.tokens + extract(epoch FROM now() - b.updated_at) * p_per_minute / 60.0) >= p_n
  RETURNING b.tokens INTO left_after;
  IF FOUND THEN
    RETURN QUERY SELECT true, floor(left_after)::integer, 0;
    RETURN;
  END IF;
  SELECT least(p_per_minute::double precision,
      b.tokens + extract(epoch FROM now() - b.updated_at) * p_per_minute / 60.0)
  INTO have FROM pgsched.rate_buckets b WHERE b.owner = p_owner;
  RETURN QUERY SELECT false, floor(have)::integer,
    greatest(1, ceil((p_n - have) * 60.0 / p_per_minute))::integer;
END
$$;

-- Raises PS429 when a session that acts only for itself submits faster than the SQL API's limit.
CREATE FUNCTION pgsched._limit_sql_submissions(p_owner text, p_n integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  t record;
  per_minute integer := (SELECT rate_limit_per_minute FROM pgsched.settings);
BEGIN
  IF pgsched._acts_for_anyone() THEN RETURN; END IF;
  SELECT * INTO t FROM pgsched.take_submission_tokens(p_owner, p_n, per_minute);
  IF NOT t.allowed THEN
    RAISE EXCEPTION 'pgsched: rate limit: % may submit % jobs a minute', p_owner, per_minute
      USING ERRCODE = 'PS429',
        HINT = CASE WHEN t.retry_after_seconds IS NULL
          THEN format('a batch of %s jobs is larger than the limit', p_n)
          ELSE format('retry after %s s', t.retry_after_seconds) END;
  END IF;
END
$$;

-- Raises PS503 at degradation level 4: new submissions are refused.
CREATE FUNCTION pgsched._refuse_if_degraded() RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
  d pgsched.degradation;
BEGIN
  SELECT * INTO d FROM pgsched.degradation;
  IF d.level >= 4 THEN
    RAISE EXCEPTION 'pgsched: new submissions are refused: degradation level 4 (%)', d.cause
      USING ERRCODE = 'PS503';
  END IF;
END
$$;

------------------------------------------------------------------------------------------------
-- Dependencies.
------------------------------------------------------------------------------------------------

/**
 * Whether waiting run p_run_id may start: NULL when every dependency of its job has succeeded,
 * 'waiting' while one has not yet, or the reason to skip it when one failed for good.
 * A one-off dependency has succeeded when a run of it has. A recurring dependency has when one
 * of its runs succeeded after the dependent's previous run was created (any, for its first run).
 */
CREATE FUNCTION pgsched._dependencies_state(p_run_id bigint) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
  r pgsched.runs;
  d record;
  since timestamptz;
  last_status text;
BEGIN
  SELECT * INTO r FROM pgsched.runs WHERE id = p_run_id;
  SELECT coalesce(max(p.created_at), '-infinity') INTO since FROM pgsched.runs p
  WHERE p.job_id = r.job_id AND p.id < r.id;
  FOR d IN
    SELECT j.id, j.name, j.schedule, j.status FROM pgsched.job_dependencies dep
    JOIN pgsched.jobs j ON j.id = dep.depends_on WHERE dep.job_id = r.job_id ORDER BY j.id
  LOOP
    IF d.schedule IS NULL THEN
      CONTINUE WHEN EXISTS (
        SELECT 1 FROM pgsched.runs x WHERE x.job_id = d.id AND x.status = 'succeeded');
      SELECT x.status INTO last_status FROM pgsched.runs x WHERE x.job_id = d.id
      ORDER BY x.id DESC LIMIT 1;
    ELSE
      CONTINUE WHEN EXISTS (
        SELECT 1 FROM pgsched.runs x
        WHERE x.job_id = d.id AND x.status = 'succeeded' AND x.finished_at >= since);
      SELECT x.status INTO last_status FROM pgsched.runs x
      WHERE x.job_id = d.id AND x.created_at >= since ORDER BY x.id DESC LIMIT 1;
    END IF;
    IF last_status IN ('dead', 'cancelled', 'skipped') OR d.status = 'cancelled' THEN
      RETURN format('dependency %s (%s) %s', d.id, d.name, CASE
        WHEN d.status = 'cancelled' THEN 'was cancelled'
        WHEN last_status = 'dead' THEN 'was dead-lettered'
        ELSE 'was ' || last_status END);
    END IF;
    RETURN 'waiting';
  END LOOP;
  RETURN NULL;
END
$$;

-- Marks a one-off job completed once it has no run left to finish.
CREATE FUNCTION pgsched._complete_if_done(p_job_id bigint) RETURNS void
LANGUAGE sql AS $$
  UPDATE pgsched.jobs j SET status = 'completed', updated_at = now()
  WHERE j.id = p_job_id AND j.schedule IS NULL AND j.status = 'active' AND NOT EXISTS (
    SELECT 1 FROM pgsched.runs r
    WHERE r.job_id = j.id AND r.status IN ('waiting', 'queued', 'running', 'failed'))
$$;

-- Moves a waiting run to the queue (and its executor).
CREATE FUNCTION pgsched._promote(p_run_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE pgsched.runs SET status = 'queued', available_at = greatest(scheduled_for, now()),
    updated_at = now()
  WHERE id = p_run_id AND status = 'waiting';
  IF FOUND THEN PERFORM pgsched._enqueue_attempt(p_run_id); END IF;
END
$$;

/**
 * Settles waiting run p_run_id if its dependencies allow: queued when all succeeded, skipped
 * (with the reason) when one failed for good; left waiting otherwise. Returns its status.
 */
CREATE FUNCTION pgsched._resolve(p_run_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgsched.runs;
  state text;
BEGIN
  SELECT * INTO r FROM pgsched.runs WHERE id = p_run_id FOR UPDATE;
  IF r.status IS DISTINCT FROM 'waiting' THEN RETURN r.status; END IF;
  state := pgsched._dependencies_state(p_run_id);
  IF state IS NULL THEN
    PERFORM pgsched._promote(p_run_id);
    RETURN 'queued';
  ELSIF state <> 'waiting' THEN
    UPDATE pgsched.runs SET status = 'skipped', error = state, finished_at = now(), updated_at = now()
    WHERE id = p_run_id;
    PERFORM pgsched._complete_if_done(r.job_id);
    RETURN 'skipped';
  END IF;
  RETURN 'waiting';
END
$$;

-- When a run settles, its job's dependents that wait are resolved in the same transaction: no
-- polling lag. A skip cascades through this same trigger.
CREATE FUNCTION pgsched._on_run_settled() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  w record;
BEGIN
  FOR w IN
    SELECT r.id FROM pgsched.job_dependencies d
    JOIN pgsched.runs r ON r.job_id = d.job_id AND r.status = 'waiting'
    WHERE d.depends_on = NEW.job_id ORDER BY r.id
  LOOP
    IF pgsched._degradation_level() >= 3 THEN
      PERFORM pgsched._promote(w.id);
    ELSE
      PERFORM pgsched._resolve(w.id);
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;

CREATE TRIGGER runs_settled AFTER UPDATE OF status ON pgsched.runs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
    AND NEW.status IN ('succeeded', 'dead', 'cancelled', 'skipped'))
  EXECUTE FUNCTION pgsched._on_run_settled();
CREATE TRIGGER runs_settled_insert AFTER INSERT ON pgsched.runs
  FOR EACH ROW WHEN (NEW.status = 'skipped')
  EXECUTE FUNCTION pgsched._on_run_settled();

CREATE FUNCTION pgsched._degradation_level() RETURNS smallint
LANGUAGE sql STABLE AS $$ SELECT level FROM pgsched.degradation $$;

/**
 * The leader's dependency sweep, for anything the trigger missed: resolves up to p_limit waiting
 * runs, oldest first (at degradation level 3 and above, promotes them unchecked). Returns how
 * many it queued or skipped.
 */
CREATE FUNCTION pgsched.resolve_waiting(p_limit integer DEFAULT 500) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  n integer := 0;
BEGIN
  IF pgsched._degradation_level() >= 3 THEN
    RETURN pgsched.promote_waiting(p_limit);
  END IF;
  FOR w IN
    SELECT r.id FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.status = 'waiting' AND j.status IN ('active', 'completed')
    ORDER BY r.id LIMIT p_limit
    FOR UPDATE OF r SKIP LOCKED
  LOOP
    IF pgsched._resolve(w.id) <> 'waiting' THEN n := n + 1; END IF;
  END LOOP;
  RETURN n;
END
$$;

/**
 * Promotes up to p_limit waiting runs without checking their dependencies: degradation level 3,
 * or the resolver's fallback when its checks keep failing (p_fallback counts it).
 */
CREATE FUNCTION pgsched.promote_waiting(p_limit integer DEFAULT 500, p_fallback boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  n integer := 0;
BEGIN
  FOR w IN
    SELECT r.id FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.status = 'waiting' AND j.status IN ('active', 'completed')
    ORDER BY r.id LIMIT p_limit
    FOR UPDATE OF r SKIP LOCKED
  LOOP
    PERFORM pgsched._promote(w.id);
    n := n + 1;
  END LOOP;
  IF p_fallback THEN
    UPDATE pgsched.degradation SET resolver_fallbacks = resolver_fallbacks + 1;
  END IF;
  RETURN n;
END
$$;

------------------------------------------------------------------------------------------------
-- Runs: dependencies and the overlap policy decide how a run starts.
------------------------------------------------------------------------------------------------

/**
 * Creates the run of job p_job_id for the occurrence p_scheduled_for, unless that occurrence
 * already has a run (unique (job_id, scheduled_for): a tick fires at most once); returns its id,
 * or NULL when the occurrence existed. A recurring job's concurrency_policy applies while an
 * earlier run is unfinished: 'forbid' records this one as skipped, 'replace' cancels the earlier.
 * A job with dependencies gets a waiting run, resolved at once (below degradation level 3).
 */
CREATE OR REPLACE FUNCTION pgsched._create_run(p_job_id bigint, p_scheduled_for timestamptz, p_traceparent text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  j pgsched.jobs;
  new_id bigint;
  busy boolean;
  waits boolean;
  r record;
BEGIN
  SELECT * INTO j FROM pgsched.jobs WHERE id = p_job_id;
  busy := j.schedule IS NOT NULL AND j.concurrency_policy <> 'allow' AND EXISTS (
    SELECT 1 FROM pgsched.runs x
    WHERE x.job_id = p_job_id AND x.status IN ('waiting', 'queued', 'running', 'failed'));
  IF busy AND j.concurrency_policy = 'forbid' THEN
    INSERT INTO pgsched.runs (job_id, scheduled_for, status, finished_at, error, traceparent)
    VALUES (p_job_id, p_scheduled_for, 'skipped', now(),
      'skipped: the previous run is still in progress (concurrency_policy forbid)', p_traceparent)
    ON CONFLICT (job_id, scheduled_for) DO NOTHING
    RETURNING id INTO new_id;
    RETURN new_id;
  END IF;
  waits := EXISTS (SELECT 1 FROM pgsched.job_dependencies d WHERE d.job_id = p_job_id)
    AND pgsched._degradation_level() < 3;
  INSERT INTO pgsched.runs (job_id, scheduled_for, status, available_at, traceparent)
  VALUES (p_job_id, p_scheduled_for, CASE WHEN waits THEN 'waiting' ELSE 'queued' END,
    greatest(p_scheduled_for, now()), p_traceparent)
  ON CONFLICT (job_id, scheduled_for) DO NOTHING
  RETURNING id INTO new_id;
  IF new_id IS NULL THEN RETURN NULL; END IF;
  IF busy THEN
    FOR r IN
      UPDATE pgsched.runs x SET status = 'cancelled', finished_at = now(), updated_at = now(),
        error = format('replaced by the run for %s (concurrency_policy replace)', p_scheduled_for)
      WHERE x.job_id = p_job_id AND x.id <> new_id
        AND x.status IN ('waiting', 'queued', 'running', 'failed')
      RETURNING x.id, x.attempt
    LOOP
      PERFORM graphile_worker.remove_job('pgsched_run:' || r.id);
      PERFORM pg_notify('pgsched_cancel', json_build_object('run_id', r.id, 'attempt', r.attempt)::text);
    END LOOP;
  END IF;
  IF waits THEN
    PERFORM pgsched._resolve(new_id);
  ELSE
    PERFORM pgsched._enqueue_attempt(new_id);
  END IF;
  RETURN new_id;
END
$$;

------------------------------------------------------------------------------------------------
-- Submission: one job, or a batch (a DAG) in one transaction.
------------------------------------------------------------------------------------------------

DROP FUNCTION pgsched.submit_job(text, text, text, jsonb, text, text, timestamptz, integer, integer,
  integer, integer, text, text, text, text);

/**
 * Validates and stores one job (no rate limit or degradation check: the public functions do
 * those once per call). Returns the job id; the same idempotency_key from the same owner returns
 * the first job.
 */
CREATE FUNCTION pgsched._submit_job(
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

/**
 * Submits a job in the caller's transaction and returns its id. A one-off job (no schedule) gets
 * its run at run_at (default now); a scheduled job's first tick is planned by the scheduler,
 * which this wakes with NOTIFY. depends_on lists jobs that must succeed first (see the README's
 * dependency rule); concurrency_policy ('allow', 'forbid', 'replace') says what a recurring job's
 * tick does while its previous run is unfinished. The same idempotency_key from the same owner
 * returns the first job. Refused at degradation level 4 (PS503) and over the rate limit (PS429).
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
  concurrency_policy text DEFAULT 'allow'
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pgsched._refuse_if_degraded();
  PERFORM pgsched._limit_sql_submissions(submit_job.owner, 1);
  RETURN pgsched._submit_job(
    submit_job.name, submit_job.command, submit_job.task, submit_job.payload,
    submit_job.schedule, submit_job.timezone, submit_job.run_at, submit_job.priority,
    submit_job.max_retries, submit_job.backoff_base_seconds, submit_job.timeout_seconds,
    submit_job.queue, submit_job.idempotency_key, submit_job.owner, submit_job.traceparent,
    coalesce(submit_job.depends_on, '{}'), coalesce(submit_job.concurrency_policy, 'allow'));
END
$$;

-- An integer field of a batch element, or p_default when absent.
CREATE FUNCTION pgsched._json_int(e jsonb, k text, p_default integer) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF NOT e ? k OR jsonb_typeof(e -> k) = 'null' THEN RETURN p_default; END IF;
  IF jsonb_typeof(e -> k) <> 'number' OR (e ->> k)::numeric <> trunc((e ->> k)::numeric)
      OR abs((e ->> k)::numeric) > 2147483647 THEN
    PERFORM pgsched._invalid(k, 'must be an integer');
  END IF;
  RETURN (e ->> k)::integer;
END
$$;

-- A text field of a batch element, or NULL when absent.
CREATE FUNCTION pgsched._json_text(e jsonb, k text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF NOT e ? k OR jsonb_typeof(e -> k) = 'null' THEN RETURN NULL; END IF;
  IF jsonb_typeof(e -> k) <> 'string' THEN PERFORM pgsched._invalid(k, 'must be a string'); END IF;
  RETURN e ->> k;
END
$$;

-- A time field of a batch element (ISO 8601), or NULL when absent. Checked by pattern rather
-- than by catching the cast's error, which would open a subtransaction per job.
CREATE FUNCTION pgsched._json_time(e jsonb, k text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v text := pgsched._json_text(e, k);
BEGIN
  IF v IS NOT NULL AND v !~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$' THEN
    PERFORM pgsched._invalid(k, format('%L is not an ISO 8601 time', v));
  END IF;
  RETURN v::timestamptz;
END
$$;

/**
 * Submits up to 1,000 jobs in the caller's transaction, all or nothing, and returns their ids in
 * order. jobs is a JSON array of objects with submit_job's fields, plus an optional "ref" (a
 * name unique in the batch); "depends_on" may hold job ids and refs of other jobs in the batch,
 * which is how a DAG is submitted at once. Cycles among refs are refused. Errors name the element
 * and field, e.g. COLUMN = 'jobs[3].depends_on'. The rate limit counts every job.
 */
CREATE FUNCTION pgsched.submit_jobs(jobs jsonb, owner text DEFAULT session_user, traceparent text DEFAULT NULL)
RETURNS TABLE (ref text, job_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

------------------------------------------------------------------------------------------------
-- Degradation.
------------------------------------------------------------------------------------------------

-- Records a change of level or mode with its cause; at level 3 and above, waiting runs start at
-- once without dependency checks.
CREATE FUNCTION pgsched._set_degradation(p_mode text, p_level integer, p_cause text, p_actor text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  before pgsched.degradation;
BEGIN
  SELECT * INTO before FROM pgsched.degradation FOR UPDATE;
  IF before.level = p_level AND before.mode = p_mode THEN RETURN; END IF;
  UPDATE pgsched.degradation
  SET mode = p_mode, level = p_level, cause = p_cause, changed_at = now();
  INSERT INTO pgsched.degradation_events (from_level, to_level, mode, cause, actor)
  VALUES (before.level, p_level, p_mode, p_cause, p_actor);
  IF p_level >= 3 THEN
    PERFORM pgsched.promote_waiting(2147483647);
  END IF;
END
$$;

/**
 * Sets degradation by hand: mode 'manual' with a level 0-4, or 'auto' (the leader sets the level
 * from queue depth). Thresholds, when given, are changed too. Admins only. Returns the state.
 */
CREATE FUNCTION pgsched.set_degradation(
  mode text, level integer DEFAULT NULL, reason text DEFAULT NULL, actor text DEFAULT session_user,
  warn_queue_depth bigint DEFAULT NULL, critical_queue_depth bigint DEFAULT NULL
) RETURNS pgsched.degradation
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
  d pgsched.degradation;
BEGIN
  IF NOT pgsched._acts_for_anyone() THEN
    RAISE EXCEPTION 'pgsched: only an admin may set degradation' USING ERRCODE = '42501';
  END IF;
  IF mode IS NULL OR mode NOT IN ('auto', 'manual') THEN
    PERFORM pgsched._invalid('mode', 'must be auto or manual');
  END IF;
  IF mode = 'manual' AND (level IS NULL OR level NOT BETWEEN 0 AND 4) THEN
    PERFORM pgsched._invalid('level', 'a manual level must be between 0 and 4');
  END IF;
  IF mode = 'auto' AND level IS NOT NULL THEN
    PERFORM pgsched._invalid('level', 'the automatic mode sets the level itself; give no level');
  END IF;
  SELECT * INTO d FROM pgsched.degradation FOR UPDATE;
  IF coalesce(warn_queue_depth, d.warn_queue_depth) <= 0
      OR coalesce(critical_queue_depth, d.critical_queue_depth) <= coalesce(warn_queue_depth, d.warn_queue_depth) THEN
    PERFORM pgsched._invalid('critical_queue_depth', 'thresholds must satisfy 0 < warn_queue_depth < critical_queue_depth');
  END IF;
  UPDATE pgsched.degradation SET
    warn_queue_depth = coalesce(set_degradation.warn_queue_depth, degradation.warn_queue_depth),
    critical_queue_depth = coalesce(set_degradation.critical_queue_depth, degradation.critical_queue_depth);
  PERFORM pgsched._set_degradation(mode,
    CASE WHEN mode = 'manual' THEN level ELSE d.level END,
    coalesce(nullif(btrim(reason), ''), format('set %s by %s', mode, actor)), actor);
  IF mode = 'auto' THEN
    PERFORM pgsched.evaluate_degradation();
  END IF;
  SELECT * INTO d FROM pgsched.degradation;
  RETURN d;
END
$$;

/**
 * The automatic mode, run by the leader: measures the queue depth (runs waiting or queued,
 * counted up to twice the critical threshold) and sets the level: 2 from the warning threshold
 * (low priorities shed, history capped), 3 from the critical one (dependency checks dropped),
 * 4 from twice the critical one (submissions refused). It lowers the level only once the depth
 * is 10 % below the threshold that raised it. Returns the state.
 */
CREATE FUNCTION pgsched.evaluate_degradation() RETURNS pgsched.degradation
LANGUAGE plpgsql AS $$
DECLARE
  d pgsched.degradation;
  depth bigint;
  target integer;
  floor_of integer;
BEGIN
  SELECT * INTO d FROM pgsched.degradation;
  SELECT count(*) INTO depth FROM (
    SELECT 1 FROM pgsched.runs WHERE status IN ('waiting', 'queued')
    LIMIT 2 * d.critical_queue_depth + 1) q;
  UPDATE pgsched.degradation SET queue_depth = depth, measured_at = now();
  IF d.mode = 'auto' THEN
    target := CASE
      WHEN depth >= 2 * d.critical_queue_depth THEN 4
      WHEN depth >= d.critical_queue_depth THEN 3
      WHEN depth >= d.warn_queue_depth THEN 2
      ELSE 0 END;
    -- Hysteresis: what the depth would give if every threshold were 10 % lower.
    floor_of := CASE
      WHEN depth >= 1.8 * d.critical_queue_depth THEN 4
      WHEN depth >= 0.9 * d.critical_queue_depth THEN 3
      WHEN depth >= 0.9 * d.warn_queue_depth THEN 2
      ELSE 0 END;
    IF target > d.level OR floor_of < d.level THEN
      PERFORM pgsched._set_degradation('auto', greatest(target, least(d.level, floor_of)),
        format('queue depth %s (warning at %s, critical at %s)', depth, d.warn_queue_depth, d.critical_queue_depth),
        'auto');
    END IF;
  END IF;
  SELECT * INTO d FROM pgsched.degradation;
  RETURN d;
END
$$;

-- The SQL API's privileges, as in 000002, as a function that later migrations call again:
-- public functions are SECURITY DEFINER and callable by pgsched_submitter only
-- (set_degradation checks for an admin itself).
CREATE FUNCTION pgsched._grant_sql_api() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'pgsched'::regnamespace AND p.prosecdef
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_submitter') THEN
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pgsched_submitter', f);
    END IF;
  END LOOP;
END
$$;

SELECT pgsched._grant_sql_api();
