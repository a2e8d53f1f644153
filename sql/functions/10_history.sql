-- Run history by UTC day (migration 000005): runs, run_attempts and run_events have one
-- partition per day, <table>_dYYYYMMDD, over the day-encoded run ids [day << 32, (day + 1) << 32),
-- plus <table>_default and <table>_legacy (ids from before partitioning).

-- The run-id bound where UTC day p_day (days since 1970-01-01) starts.
CREATE OR REPLACE FUNCTION pgsched._history_bound(p_day bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
  SELECT p_day << 32
$$;

-- The name of table p_table's partition for UTC day p_day.
CREATE OR REPLACE FUNCTION pgsched._history_partition(p_table text, p_day bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT p_table || to_char(date '1970-01-01' + p_day::integer, '"_d"YYYYMMDD')
$$;

/**
 * The leader's history maintenance, one call a pass: creates the day partitions of today ..
 * today + p_days_ahead, and drops every day partition older than p_retention_days (a day older
 * than the retention once it has wholly passed). The runs a dropped day must keep — dead letters
 * and unfinished runs, with their attempts and events — move to the DEFAULT partitions first;
 * kept runs of expired days that have since been handled are deleted from there. Never a DELETE
 * of a day's history: a whole day is dropped. Each day's DDL runs under lock_timeout
 * p_lock_timeout_ms; a day whose locks are not granted in time is skipped (listed in "skipped")
 * and retried next pass, so submissions and claims wait at most that long.
 * Returns {"created": [partitions], "dropped": [partitions], "kept": runs moved to DEFAULT,
 * "deleted": handled runs deleted from DEFAULT, "skipped": [partitions]}.
 */
CREATE OR REPLACE FUNCTION pgsched.maintain_history(
  p_now timestamptz DEFAULT now(),
  p_retention_days integer DEFAULT 30,
  p_days_ahead integer DEFAULT 3,
  p_lock_timeout_ms integer DEFAULT 1000
) RETURNS jsonb
LANGUAGE plpgsql
-- Restored when the function returns: the lock timeout set below applies to it only.
SET lock_timeout = '1s'
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  today bigint;
  cutoff bigint;
  kept_statuses constant text[] := ARRAY['dead', 'waiting', 'queued', 'running', 'failed'];
  tables constant text[] := ARRAY['runs', 'run_attempts', 'run_events'];
  created text[] := '{}';
  dropped text[] := '{}';
  skipped text[] := '{}';
  kept bigint := 0;
  deleted bigint := 0;
  d integer;
  t text;
  part text;
  day_suffix text;
  p record;
  kept_runs pgsched.runs[];
  kept_attempts pgsched.run_attempts[];
  kept_events pgsched.run_events[];
BEGIN
  IF p_now IS NULL THEN
    RAISE EXCEPTION 'maintain_history: p_now must not be null' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_retention_days IS NULL OR p_retention_days < 1 THEN
    RAISE EXCEPTION 'maintain_history: p_retention_days must be at least 1, got %', p_retention_days
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_days_ahead IS NULL OR p_days_ahead NOT BETWEEN 0 AND 366 THEN
    RAISE EXCEPTION 'maintain_history: p_days_ahead must be between 0 and 366, got %', p_days_ahead
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_lock_timeout_ms IS NULL OR p_lock_timeout_ms < 1 THEN
    RAISE EXCEPTION 'maintain_history: p_lock_timeout_ms must be at least 1, got %', p_lock_timeout_ms
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
  today := floor(extract(epoch FROM p_now) / 86400)::bigint;
  cutoff := today - p_retention_days;

  FOR d IN today .. today + p_days_ahead LOOP
    CONTINUE WHEN to_regclass('pgsched.' || pgsched._history_partition('run_events', d)) IS NOT NULL;
    BEGIN
      FOREACH t IN ARRAY tables LOOP
        part := pgsched._history_partition(t, d);
        CONTINUE WHEN to_regclass('pgsched.' || part) IS NOT NULL;
        EXECUTE format('CREATE TABLE pgsched.%I PARTITION OF pgsched.%I FOR VALUES FROM (%s) TO (%s)',
          part, t, pgsched._history_bound(d), pgsched._history_bound(d + 1));
        IF t = 'runs' THEN
          -- UNIQUE (job_id, scheduled_for) per partition: a tick is created at most once a day.
          EXECUTE format('CREATE UNIQUE INDEX %I ON pgsched.%I (job_id, scheduled_for)',
            part || '_job_id_scheduled_for_key', part);
        END IF;
        created := created || part;
      END LOOP;
    EXCEPTION
      -- check_violation: the DEFAULT partition already holds runs of that day (days were not
      -- created ahead in time); they stay there and are pruned from there.
      WHEN lock_not_available OR deadlock_detected OR check_violation THEN
        skipped := skipped || pgsched._history_partition('runs', d);
    END;
  END LOOP;

  FOR p IN
    SELECT c.relname AS name,
      substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''?(-?[0-9]+)''?\)')::bigint AS lo,
      substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''?(-?[0-9]+)''?\)')::bigint AS hi
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'pgsched.runs'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    ORDER BY 3
  LOOP
    CONTINUE WHEN p.hi > pgsched._history_bound(cutoff);
    BEGIN
      -- Every access to history goes through the parents: holding them holds the day.
      LOCK TABLE ONLY pgsched.runs, ONLY pgsched.run_attempts, ONLY pgsched.run_events
        IN ACCESS EXCLUSIVE MODE;
      SELECT array_agg(r) INTO kept_runs FROM pgsched.runs r
      WHERE r.id >= coalesce(p.lo, -9223372036854775808) AND r.id < p.hi AND r.status = ANY (kept_statuses);
      SELECT array_agg(a) INTO kept_attempts FROM pgsched.run_attempts a
      WHERE a.run_id >= coalesce(p.lo, -9223372036854775808) AND a.run_id < p.hi
        AND a.run_id = ANY (ARRAY(SELECT (unnest(kept_runs)).id));
      SELECT array_agg(e) INTO kept_events FROM pgsched.run_events e
      WHERE e.run_id >= coalesce(p.lo, -9223372036854775808) AND e.run_id < p.hi
        AND e.run_id = ANY (ARRAY(SELECT (unnest(kept_runs)).id));
      -- The day's name after the table's (_dYYYYMMDD, or _legacy), the same for all three.
      day_suffix := substr(p.name, length('runs') + 1);
      FOREACH t IN ARRAY ARRAY['run_events', 'run_attempts', 'runs'] LOOP
        EXECUTE format('DROP TABLE IF EXISTS pgsched.%I', t || day_suffix);
        dropped := dropped || (t || day_suffix);
      END LOOP;
      -- Into the DEFAULT partitions directly: the runs' statement triggers (transition log,
      -- settlement) are on the parent and must not fire for a move.
      INSERT INTO pgsched.runs_default SELECT * FROM unnest(kept_runs);
      INSERT INTO pgsched.run_attempts_default SELECT * FROM unnest(kept_attempts);
      INSERT INTO pgsched.run_events_default SELECT * FROM unnest(kept_events);
      kept := kept + coalesce(cardinality(kept_runs), 0);
    EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
      skipped := skipped || p.name::text;
    END;
  END LOOP;

  -- Kept runs of expired days that have since been handled (a dead letter retried or
  -- discarded): a few rows, deleted from the DEFAULT partitions.
  BEGIN
    WITH gone AS (
      DELETE FROM pgsched.runs_default r
      WHERE r.id < pgsched._history_bound(cutoff) AND NOT (r.status = ANY (kept_statuses))
      RETURNING r.id
    ), attempts AS (
      DELETE FROM pgsched.run_attempts_default a WHERE a.run_id IN (SELECT id FROM gone)
    ), events AS (
      DELETE FROM pgsched.run_events_default e WHERE e.run_id IN (SELECT id FROM gone)
    )
    SELECT count(*) INTO deleted FROM gone;
  EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
    skipped := skipped || 'runs_default'::text;
  END;

  RETURN jsonb_build_object('created', to_jsonb(created), 'dropped', to_jsonb(dropped),
    'kept', kept, 'deleted', deleted, 'skipped', to_jsonb(skipped));
END
$$;
