-- 000001_baseline: the pgsched schema — tables, indexes, seed rows, roles and table grants.
-- pgsched 0.1.0 was never released; this baseline folds the eight migrations of its development
-- (000001_init … 000008_job_isolation) into one. A database migrated by that chain holds exactly
-- these tables: the migrator recognises it (version 1 named 'init') and records it as this
-- baseline without running it (src/db/migrator.ts). Functions and triggers are not migrations:
-- they live in sql/functions/ and are applied after the migrations (see sql/README.md).
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
  concurrency_policy text NOT NULL DEFAULT 'allow'
    CHECK (concurrency_policy IN ('allow', 'forbid', 'replace')),
  -- The limits asked for (memory_mb, cpu_seconds, max_processes, file_size_mb, open_files);
  -- a limit not given takes the executing worker's default.
  limits jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limits) = 'object'),
  network boolean NOT NULL DEFAULT false,
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
-- For the sweep that finds queued runs whose executor job was lost.
CREATE INDEX runs_waiting_idx ON pgsched.runs (available_at) WHERE status IN ('queued', 'failed');
CREATE INDEX runs_status_waiting_idx ON pgsched.runs (id) WHERE status = 'waiting';
CREATE INDEX runs_active_idx ON pgsched.runs (job_id) WHERE status IN ('waiting', 'queued', 'running', 'failed');

-- One row per execution attempt of a run: the history an operator reads after a failure.
CREATE TABLE pgsched.run_attempts (
  run_id bigint NOT NULL REFERENCES pgsched.runs (id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  worker text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  -- 'interrupted': the worker was shut down and handed the attempt back; it does not use a retry.
  outcome text NOT NULL DEFAULT 'running' CHECK (
    outcome IN ('running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'interrupted')
  ),
  exit_code integer,
  error text,
  -- Which sandbox a command's attempt ran under (NULL for a task, which runs in-process).
  sandbox text,
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

-- The scheduler leader, for operators: the advisory lock decides leadership, this row reports it.
CREATE TABLE pgsched.leader (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  holder text NOT NULL,
  term bigint NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now()
);

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
  error text,
  -- How the worker isolates command jobs ('bwrap', 'rlimits', 'none', or why it refuses them).
  sandbox text
);

CREATE INDEX workers_live_idx ON pgsched.workers (heartbeat_at) WHERE state IN ('active', 'stopping');

-- Edges of the dependency graph: job_id runs only after depends_on has succeeded. Set at
-- submission only, and only towards jobs that already exist (or come earlier in the same batch),
-- so the graph cannot gain a cycle later.
CREATE TABLE pgsched.job_dependencies (
  job_id bigint NOT NULL REFERENCES pgsched.jobs (id) ON DELETE CASCADE,
  depends_on bigint NOT NULL REFERENCES pgsched.jobs (id) ON DELETE CASCADE,
  PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_reverse_idx ON pgsched.job_dependencies (depends_on);

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
  rate_limit_per_minute integer NOT NULL DEFAULT 1000 CHECK (rate_limit_per_minute > 0),
  -- The most a submission may ask for; an admin raises or lowers them (set_job_limit_ceilings).
  job_limit_ceilings jsonb NOT NULL DEFAULT
    '{"memory_mb": 4096, "cpu_seconds": 86400, "max_processes": 4096, "file_size_mb": 10240, "open_files": 65536}'
    CHECK (jsonb_typeof(job_limit_ceilings) = 'object'),
  -- Whether sessions that act only for themselves may give their jobs network access.
  job_network_allowed boolean NOT NULL DEFAULT false
);
INSERT INTO pgsched.settings DEFAULT VALUES;

-- One token bucket per owner, shared by REST and SQL submissions.
CREATE TABLE pgsched.rate_buckets (
  owner text PRIMARY KEY,
  tokens double precision NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Time zone names that passed validation. pg_timezone_names reads the whole time zone database
-- (about 10 ms a call), too slow for every job of a batch; a name is looked up there only once.
CREATE TABLE pgsched.timezone_names (name text PRIMARY KEY);
INSERT INTO pgsched.timezone_names SELECT DISTINCT name FROM pg_timezone_names;

-- Least privilege for applications that use the SQL API: an application's database role needs no
-- privilege on pgsched's tables. Grant it pgsched_submitter, which may execute the public API
-- functions only (granted in sql/functions/99_privileges.sql). Those run as their owner
-- (SECURITY DEFINER, fixed search_path) and act only on jobs whose owner is the caller's
-- session_user; members of pgsched_admin act on every job. Creating roles needs CREATEROLE;
-- without it the migration says so (NOTICE) and the roles' grants are skipped.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_submitter') THEN
    CREATE ROLE pgsched_submitter NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_admin') THEN
    CREATE ROLE pgsched_admin NOLOGIN IN ROLE pgsched_submitter;
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'pgsched: no CREATEROLE privilege: create roles pgsched_submitter and pgsched_admin (a member of pgsched_submitter), then run SELECT pgsched._grant_sql_api()';
END
$$;
