-- Degradation: the level (0 = normal; 1-4 in the operations design's order), set automatically
-- from the queue depth or by an operator, and the guards that act on it.

CREATE OR REPLACE FUNCTION pgsched._degradation_level() RETURNS smallint
LANGUAGE sql STABLE AS $$ SELECT level FROM pgsched.degradation $$;

-- Raises PS503 at degradation level 4: new submissions are refused.
CREATE OR REPLACE FUNCTION pgsched._refuse_if_degraded() RETURNS void
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

-- Records a change of level or mode with its cause; at level 3 and above, waiting runs start at
-- once without dependency checks.
CREATE OR REPLACE FUNCTION pgsched._set_degradation(p_mode text, p_level integer, p_cause text, p_actor text)
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
CREATE OR REPLACE FUNCTION pgsched.set_degradation(
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
 * The queue depth, runs waiting or queued: counted exactly up to 10,000, above that the
 * planner's estimate (from the partitions' statistics, which autovacuum keeps fresh), so a
 * measurement costs at most 10,000 index entries however deep the queue is. The thresholds are
 * millions: an estimate a few percent off moves a level change by as much, no more.
 */
CREATE OR REPLACE FUNCTION pgsched._queue_depth() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  exact bigint;
  plan jsonb;
BEGIN
  SELECT count(*) INTO exact FROM (
    SELECT 1 FROM pgsched.runs WHERE status IN ('waiting', 'queued') LIMIT 10001) q;
  IF exact <= 10000 THEN
    RETURN exact;
  END IF;
  EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM pgsched.runs WHERE status IN (''waiting'', ''queued'')'
    INTO plan;
  RETURN greatest(exact, (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint);
END
$$;

/**
 * The automatic mode, run by the leader: measures the queue depth (runs waiting or queued,
 * pgsched._queue_depth) and sets the level: 2 from the warning threshold
 * (low priorities shed, history capped), 3 from the critical one (dependency checks dropped),
 * 4 from twice the critical one (submissions refused). It lowers the level only once the depth
 * is 10 % below the threshold that raised it. Returns the state.
 */
CREATE OR REPLACE FUNCTION pgsched.evaluate_degradation() RETURNS pgsched.degradation
LANGUAGE plpgsql AS $$
DECLARE
  d pgsched.degradation;
  depth bigint;
  target integer;
  floor_of integer;
BEGIN
  SELECT * INTO d FROM pgsched.degradation;
  depth := pgsched._queue_depth();
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
