-- Dependencies: a run of a job with dependencies waits until every job it depends on has
-- succeeded (or is skipped when one failed for good). Triggers resolve dependents as runs settle;
-- resolve_waiting and promote_waiting are the scheduler's sweeps.

/**
 * Whether waiting run p_run_id may start: NULL when every dependency of its job has succeeded,
 * 'waiting' while one has not yet, or the reason to skip it when one failed for good.
 * A one-off dependency has succeeded when a run of it has. A recurring dependency has when one
 * of its runs succeeded after the dependent's previous run was created (any, for its first run).
 */
CREATE OR REPLACE FUNCTION pgsched._dependencies_state(p_run_id bigint) RETURNS text
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

-- Moves a waiting run to the queue (and its executor).
CREATE OR REPLACE FUNCTION pgsched._promote(p_run_id bigint) RETURNS void
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
CREATE OR REPLACE FUNCTION pgsched._resolve(p_run_id bigint) RETURNS text
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

-- When runs settle, their jobs' dependents that wait are resolved in the same transaction: no
-- polling lag. A skip cascades through these same triggers.
CREATE OR REPLACE FUNCTION pgsched._resolve_dependents(p_job_ids bigint[]) RETURNS void
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

CREATE OR REPLACE FUNCTION pgsched._on_runs_settled() RETURNS trigger
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
CREATE OR REPLACE FUNCTION pgsched._on_run_inserted_skipped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgsched._resolve_dependents(ARRAY[NEW.job_id]);
  RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER runs_settled AFTER UPDATE ON pgsched.runs
  REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
  FOR EACH STATEMENT EXECUTE FUNCTION pgsched._on_runs_settled();

CREATE OR REPLACE TRIGGER runs_settled_insert AFTER INSERT ON pgsched.runs
  FOR EACH ROW WHEN (NEW.status = 'skipped')
  EXECUTE FUNCTION pgsched._on_run_inserted_skipped();

-- Locks up to p_limit waiting runs of live jobs, oldest first, skipping those another sweep or a
-- settling run holds; returns their ids.
CREATE OR REPLACE FUNCTION pgsched._lock_waiting_runs(p_limit integer) RETURNS SETOF bigint
LANGUAGE sql AS $$
  SELECT r.id FROM pgsched.runs r JOIN pgsched.jobs j ON j.id = r.job_id
  WHERE r.status = 'waiting' AND j.status IN ('active', 'completed')
  ORDER BY r.id LIMIT p_limit
  FOR UPDATE OF r SKIP LOCKED
$$;

/**
 * The leader's dependency sweep, for anything the trigger missed: resolves up to p_limit waiting
 * runs, oldest first (at degradation level 3 and above, promotes them unchecked). Returns how
 * many it queued or skipped.
 */
CREATE OR REPLACE FUNCTION pgsched.resolve_waiting(p_limit integer DEFAULT 500) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  n integer := 0;
BEGIN
  IF pgsched._degradation_level() >= 3 THEN
    RETURN pgsched.promote_waiting(p_limit);
  END IF;
  FOR w IN SELECT * FROM pgsched._lock_waiting_runs(p_limit) AS w (id) LOOP
    IF pgsched._resolve(w.id) <> 'waiting' THEN n := n + 1; END IF;
  END LOOP;
  RETURN n;
END
$$;

/**
 * Promotes up to p_limit waiting runs without checking their dependencies: degradation level 3,
 * or the resolver's fallback when its checks keep failing (p_fallback counts it).
 */
CREATE OR REPLACE FUNCTION pgsched.promote_waiting(p_limit integer DEFAULT 500, p_fallback boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  n integer := 0;
BEGIN
  FOR w IN SELECT * FROM pgsched._lock_waiting_runs(p_limit) AS w (id) LOOP
    PERFORM pgsched._promote(w.id);
    n := n + 1;
  END LOOP;
  IF p_fallback THEN
    UPDATE pgsched.degradation SET resolver_fallbacks = resolver_fallbacks + 1;
  END IF;
  RETURN n;
END
$$;
