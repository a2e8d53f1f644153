-- Enqueue: a run's current attempt becomes one Graphile Worker job, created in the same
-- transaction as the run (architecture §1.3). Every path that enqueues (single submit, batch,
-- ticks, retries, rescue, dependencies) goes through _enqueue_attempt or _enqueue_attempts, and
-- both take the executor job's spec from _executor_job_specs.

-- The Graphile job_key of run p_run_id's executor job: one per run, so enqueueing the next
-- attempt replaces the previous one, and a run's executor job can be found or removed by key.
CREATE OR REPLACE FUNCTION pgsched._executor_job_key(p_run_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT 'pgsched_run:' || p_run_id
$$;

-- The executor job spec of attempt p_attempt of run p_run_id, of a job with queue p_queue and
-- priority p_priority, due at p_run_at. pgsched owns retries, so each attempt is one executor job
-- with max_attempts = 1; a job's queue is its Graphile lane ('pgsched:' || queue, NULL = no
-- lane); priorities 8-10 carry the 'low' flag so a degraded system can skip them with
-- forbiddenFlags.
CREATE OR REPLACE FUNCTION pgsched._executor_job_spec(p_run_id bigint, p_attempt integer,
  p_queue text, p_run_at timestamptz, p_priority integer)
RETURNS graphile_worker.job_spec
LANGUAGE sql STABLE AS $$
  SELECT ROW('pgsched_run', json_build_object('run_id', p_run_id, 'attempt', p_attempt),
    CASE WHEN p_queue IS NOT NULL THEN 'pgsched:' || p_queue END, p_run_at, 1,
    pgsched._executor_job_key(p_run_id), p_priority,
    CASE WHEN p_priority >= 8 THEN ARRAY['low'] END)::graphile_worker.job_spec
$$;

-- The executor job specs of the current attempts of runs p_run_ids, in run id order.
CREATE OR REPLACE FUNCTION pgsched._executor_job_specs(p_run_ids bigint[])
RETURNS graphile_worker.job_spec[]
LANGUAGE sql STABLE AS $$
  SELECT ARRAY(
    SELECT pgsched._executor_job_spec(r.id, r.attempt, j.queue, r.available_at, j.priority)
    FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
    WHERE r.id = ANY (p_run_ids)
    ORDER BY r.id)
$$;

-- Enqueues a new attempt with add_job, which is cheaper than add_jobs' set-based statements
-- for a single run: spec s (_executor_job_spec).
CREATE OR REPLACE FUNCTION pgsched._add_executor_job(s graphile_worker.job_spec) RETURNS void
LANGUAGE sql AS $$
  SELECT graphile_worker.add_job(s.identifier, s.payload, s.queue_name, s.run_at, s.max_attempts,
    s.job_key, s.priority, s.flags);
$$;

-- Enqueues run p_run_id's current attempt at once.
CREATE OR REPLACE FUNCTION pgsched._enqueue_attempt_now(p_run_id bigint) RETURNS void
LANGUAGE sql AS $$
  SELECT pgsched._add_executor_job((pgsched._executor_job_specs(ARRAY[p_run_id]))[1]);
$$;

/**
 * Enqueues the current attempts of runs p_run_ids with one add_jobs call (one insert, one NOTIFY).
 * An executor job the run already has is replaced (a locked one is detached), as add_job with the
 * same key does. The run is not written: its executor job is found by key (_executor_job_key;
 * Graphile's key is unique), and writing the id on the just-inserted run cost a second, non-HOT
 * version of every run row with all its index entries, about 40 % of a batch submission.
 */
CREATE OR REPLACE FUNCTION pgsched._enqueue_attempts(p_run_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(cardinality(p_run_ids), 0) = 0 THEN
    RETURN;
  END IF;
  PERFORM FROM graphile_worker.add_jobs(pgsched._executor_job_specs(p_run_ids));
END
$$;

/**
 * Enqueues run p_run_id's current attempt; inside a group (pgsched.defer_enqueue = 'on' in this
 * transaction) it is noted and enqueued by _enqueue_deferred with the rest of the group.
 */
CREATE OR REPLACE FUNCTION pgsched._enqueue_attempt(p_run_id bigint) RETURNS void
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

/** _enqueue_attempt for many runs: noted inside a group, else enqueued with one add_jobs. */
CREATE OR REPLACE FUNCTION pgsched._enqueue_attempts_later(p_run_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(cardinality(p_run_ids), 0) = 0 THEN
    RETURN;
  ELSIF current_setting('pgsched.defer_enqueue', true) = 'on' THEN
    PERFORM set_config('pgsched.deferred_runs',
      concat_ws(',', nullif(current_setting('pgsched.deferred_runs', true), ''),
        array_to_string(p_run_ids, ',')), true);
  ELSE
    PERFORM pgsched._enqueue_attempts(p_run_ids);
  END IF;
END
$$;

/** Starts a group: until _enqueue_deferred, enqueueing is noted, not done. */
CREATE OR REPLACE FUNCTION pgsched._defer_enqueue() RETURNS void
LANGUAGE sql AS $$
  SELECT set_config('pgsched.defer_enqueue', 'on', true);
  SELECT set_config('pgsched.deferred_runs', '', true);
$$;

/** Ends a group: enqueues every run noted since _defer_enqueue, at once. */
CREATE OR REPLACE FUNCTION pgsched._enqueue_deferred() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  noted bigint[] := string_to_array(nullif(current_setting('pgsched.deferred_runs', true), ''), ',')::bigint[];
BEGIN
  PERFORM set_config('pgsched.defer_enqueue', 'off', true);
  PERFORM set_config('pgsched.deferred_runs', '', true);
  PERFORM pgsched._enqueue_attempts(ARRAY(SELECT DISTINCT unnest(noted)));
END
$$;

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
    ON CONFLICT DO NOTHING
    RETURNING id INTO new_id;
    RETURN new_id;
  END IF;
  waits := EXISTS (SELECT 1 FROM pgsched.job_dependencies d WHERE d.job_id = p_job_id)
    AND pgsched._degradation_level() < 3;
  INSERT INTO pgsched.runs (job_id, scheduled_for, status, available_at, traceparent)
  VALUES (p_job_id, p_scheduled_for, CASE WHEN waits THEN 'waiting' ELSE 'queued' END,
    greatest(p_scheduled_for, now()), p_traceparent)
  ON CONFLICT DO NOTHING
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
      PERFORM graphile_worker.remove_job(pgsched._executor_job_key(r.id));
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
