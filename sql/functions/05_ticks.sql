-- Schedule ticks: the leader's planner (src/scheduler/ticker.ts) computes each due job's tick
-- with cron-parser and fires a batch of them here, with a few set-based statements rather than a
-- call per run (10,000 schedules due in the same second are a normal load).

/**
 * Fires ticks planned by the scheduler: for each job, creates the run for its tick (at most once
 * per (job, tick)) and moves next_run_at on, but only while next_run_at is still the value the
 * planner read (p_expected), so a stale planner changes nothing. Returns the number of runs created.
 * p_traceparents (optional, aligned with p_job_ids) is each tick's own span, made by the planner
 * when tracing: the run stores it instead of the job's submission traceparent. Without it (NULL,
 * as when not tracing) runs store the job's traceparent, as before.
 * Jobs with the default overlap policy and no dependency to wait for (the common case) get their
 * runs and executor jobs in three statements for the whole batch; the others go one by one
 * through _create_run, which applies the policy and dependencies.
 */
CREATE OR REPLACE FUNCTION pgsched.fire_ticks(
  p_job_ids bigint[], p_expected timestamptz[], p_ticks timestamptz[], p_next timestamptz[],
  p_traceparents text[] DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  unchecked boolean := pgsched._degradation_level() >= 3;
  fast_ids bigint[];
  fast_ticks timestamptz[];
  fast_tps text[];
  slow_ids bigint[];
  slow_ticks timestamptz[];
  slow_tps text[];
  run_ids bigint[];
  created integer := 0;
  i integer;
BEGIN
  WITH moved AS (
    UPDATE pgsched.jobs j SET next_run_at = u.next_at, updated_at = now()
    -- A NULL p_traceparents unnests as NULLs beside the other arrays.
    FROM unnest(p_job_ids, p_expected, p_ticks, p_next, p_traceparents)
      AS u(job_id, expected, tick, next_at, tp)
    WHERE j.id = u.job_id AND j.status = 'active'
      AND j.next_run_at IS NOT DISTINCT FROM u.expected
    RETURNING j.id, u.tick, coalesce(u.tp, j.traceparent) AS traceparent,
      j.concurrency_policy = 'allow' AND (unchecked
      OR NOT EXISTS (SELECT 1 FROM pgsched.job_dependencies d WHERE d.job_id = j.id)) AS fast
  )
  SELECT array_agg(id) FILTER (WHERE fast), array_agg(tick) FILTER (WHERE fast),
    array_agg(traceparent) FILTER (WHERE fast),
    array_agg(id) FILTER (WHERE NOT fast), array_agg(tick) FILTER (WHERE NOT fast),
    array_agg(traceparent) FILTER (WHERE NOT fast)
  INTO fast_ids, fast_ticks, fast_tps, slow_ids, slow_ticks, slow_tps
  FROM moved WHERE tick IS NOT NULL;

  IF fast_ids IS NOT NULL THEN
    WITH ins AS (
      INSERT INTO pgsched.runs (job_id, scheduled_for, available_at, traceparent)
      SELECT x.id, x.tick, greatest(x.tick, now()), x.tp
      FROM unnest(fast_ids, fast_ticks, fast_tps) AS x(id, tick, tp)
      ON CONFLICT DO NOTHING
      RETURNING id
    )
    SELECT array_agg(id) INTO run_ids FROM ins;
  END IF;
  IF run_ids IS NOT NULL THEN
    -- One add_jobs call: one insert, one NOTIFY to the workers for the whole batch.
    PERFORM pgsched._enqueue_attempts(run_ids);
    created := cardinality(run_ids);
  END IF;

  FOR i IN 1 .. coalesce(cardinality(slow_ids), 0) LOOP
    IF pgsched._create_run(slow_ids[i], slow_ticks[i], slow_tps[i]) IS NOT NULL THEN
      created := created + 1;
    END IF;
  END LOOP;
  RETURN created;
END
$$;
