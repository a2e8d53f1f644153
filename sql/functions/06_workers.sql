-- Workers: heartbeats register and refresh each worker process; the leader's rescuer declares
-- silent ones dead and gives what they held to other workers.

/**
 * A worker's heartbeat: registers it on first call, then records that it is alive, what it holds
 * and its state ('active', 'stopping' while it drains, 'stopped' when done). Returns the state
 * it had before, so a worker that was declared dead while it was unresponsive learns it (its
 * runs were rescued) and comes back as a new member.
 */
CREATE OR REPLACE FUNCTION pgsched.worker_heartbeat(
  p_name text, p_host text, p_pid integer, p_concurrency integer, p_runs bigint[],
  p_executor_ids text[], p_state text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  prev text;
BEGIN
  IF p_state NOT IN ('active', 'stopping', 'stopped') THEN
    PERFORM pgsched._invalid('state', format('unknown worker state %L', p_state));
  END IF;
  SELECT state INTO prev FROM pgsched.workers WHERE name = p_name FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO pgsched.workers (name, host, pid, concurrency, runs, executor_ids, state, stopped_at)
    VALUES (p_name, p_host, p_pid, p_concurrency, p_runs, p_executor_ids, p_state,
      CASE WHEN p_state = 'stopped' THEN now() END);
    RETURN NULL;
  END IF;
  UPDATE pgsched.workers
  SET heartbeat_at = now(), runs = p_runs, executor_ids = p_executor_ids, state = p_state,
    concurrency = p_concurrency, stopped_at = CASE WHEN p_state = 'stopped' THEN now() END,
    error = CASE WHEN p_state = 'active' THEN NULL ELSE error END
  WHERE name = p_name;
  RETURN prev;
END
$$;

/**
 * The leader's rescue sweep; every action is fenced, so two sweeps at once are harmless.
 *  1. Workers silent for longer than p_timeout are declared dead. Their running attempts are
 *     recorded as 'lost' and retried under the job's policy (or dead-lettered); runs their
 *     executor had claimed but not started are enqueued again; their Graphile Worker locks (jobs
 *     and serial queues) are released and the stale executor jobs deleted.
 *  2. Running attempts whose worker is dead or stopped, or no longer reports holding them, are
 *     lost too (a worker that died mid-handshake, or a result that could not be written).
 *  3. Safety net: a waiting run whose executor job has vanished is enqueued again (checks the
 *     p_orphan_batch runs that have waited longest).
 *  4. Rows of workers dead or stopped for a day are deleted.
 * Time is p_now (tests pass a later instant instead of waiting out the timeout). Returns one row
 * per action, for the log.
 */
CREATE OR REPLACE FUNCTION pgsched.rescue(p_timeout interval, p_orphan_batch integer DEFAULT 100,
  p_now timestamptz DEFAULT now())
RETURNS TABLE (action text, worker text, run_id bigint, detail text)
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  r record;
  stale bigint[];
BEGIN
  FOR w IN
    UPDATE pgsched.workers ws
    SET state = 'dead', stopped_at = p_now,
      error = format('no heartbeat for %s s', round(extract(epoch FROM p_now - ws.heartbeat_at)))
    WHERE ws.state IN ('active', 'stopping') AND ws.heartbeat_at < p_now - p_timeout
    RETURNING ws.name, ws.executor_ids, ws.error
  LOOP
    action := 'worker_dead'; worker := w.name; run_id := NULL; detail := w.error;
    RETURN NEXT;
    SELECT array_agg(gj.id) INTO stale FROM graphile_worker.jobs gj
    WHERE gj.locked_by = ANY (w.executor_ids);
    FOR r IN
      SELECT ru.id FROM pgsched.runs ru JOIN graphile_worker.jobs gj ON gj.key = pgsched._executor_job_key(ru.id)
      WHERE gj.id = ANY (stale) AND ru.status IN ('queued', 'failed')
      FOR UPDATE OF ru
    LOOP
      -- The old executor job is locked, so this creates a new one and detaches the old.
      PERFORM pgsched._enqueue_attempt(r.id);
      action := 'run_requeued'; worker := w.name; run_id := r.id;
      detail := 'claimed by a lost worker before it started';
      RETURN NEXT;
    END LOOP;
  END LOOP;

  FOR r IN
    SELECT ru.id, ru.attempt, ru.worker, ws.state AS worker_state
    FROM pgsched.runs ru LEFT JOIN pgsched.workers ws ON ws.name = ru.worker
    WHERE ru.status = 'running' AND (
      ws.state IN ('dead', 'stopped')
      OR (ws.name IS NULL AND ru.updated_at < p_now - p_timeout)
      OR (ws.state IN ('active', 'stopping') AND NOT (ru.id = ANY (ws.runs))
          AND ru.updated_at < ws.heartbeat_at - p_timeout)
    )
    FOR UPDATE OF ru SKIP LOCKED
  LOOP
    detail := format('worker lost: %s %s', r.worker, CASE
      WHEN r.worker_state = 'dead' THEN 'stopped sending heartbeats'
      WHEN r.worker_state = 'stopped' THEN 'stopped without reporting this attempt'
      WHEN r.worker_state IS NULL THEN 'is not a registered worker'
      ELSE 'no longer holds this attempt' END);
    action := 'run_lost'; worker := r.worker; run_id := r.id;
    detail := detail || ' → ' || coalesce(
      pgsched.run_finish(r.id, r.attempt, r.worker, 'lost', NULL, NULL, detail), 'already moved on');
    RETURN NEXT;
  END LOOP;

  -- Locks are released only now: a released job could otherwise be claimed before its run moved on.
  FOR w IN
    SELECT ws.name, ws.executor_ids FROM pgsched.workers ws
    WHERE ws.state = 'dead' AND cardinality(ws.executor_ids) > 0
      AND EXISTS (SELECT 1 FROM graphile_worker.jobs gj WHERE gj.locked_by = ANY (ws.executor_ids))
  LOOP
    SELECT array_agg(gj.id) INTO stale FROM graphile_worker.jobs gj
    WHERE gj.locked_by = ANY (w.executor_ids);
    PERFORM graphile_worker.force_unlock_workers(w.executor_ids);
    PERFORM graphile_worker.complete_jobs(stale);
  END LOOP;

  FOR r IN
    SELECT ru.id FROM pgsched.runs ru JOIN pgsched.jobs j ON j.id = ru.job_id
    WHERE ru.status IN ('queued', 'failed') AND ru.available_at < p_now - p_timeout
      AND j.status IN ('active', 'completed')
      AND NOT EXISTS (
        SELECT 1 FROM graphile_worker.jobs gj
        WHERE gj.key = pgsched._executor_job_key(ru.id) AND (gj.locked_at IS NOT NULL OR gj.attempts < gj.max_attempts)
      )
    ORDER BY ru.available_at LIMIT p_orphan_batch
    FOR UPDATE OF ru SKIP LOCKED
  LOOP
    PERFORM pgsched._enqueue_attempt(r.id);
    action := 'run_requeued'; worker := NULL; run_id := r.id;
    detail := 'its executor job was lost';
    RETURN NEXT;
  END LOOP;

  DELETE FROM pgsched.workers ws
  WHERE ws.state IN ('dead', 'stopped') AND ws.stopped_at < p_now - interval '1 day';
END
$$;
