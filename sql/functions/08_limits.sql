-- Limits: per-owner submission rate limits (token buckets shared by REST and SQL), and the
-- resource limits and network access a command job may ask for.

/**
 * Takes p_n tokens from p_owner's bucket (capacity and refill p_per_minute a minute) in one
 * atomic upsert, at p_now (tests pass a later instant instead of waiting for a refill). Returns
 * whether they were taken, what is left, and when p_n would be there.
 */
CREATE OR REPLACE FUNCTION pgsched.take_submission_tokens(p_owner text, p_n integer, p_per_minute integer,
  p_now timestamptz DEFAULT now())
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
  VALUES (p_owner, p_per_minute - p_n, p_now)
  ON CONFLICT (owner) DO UPDATE SET
    tokens = least(p_per_minute::double precision,
      b.tokens + extract(epoch FROM p_now - b.updated_at) * p_per_minute / 60.0) - p_n,
    updated_at = p_now
  WHERE least(p_per_minute::double precision,
      b.tokens + extract(epoch FROM p_now - b.updated_at) * p_per_minute / 60.0) >= p_n
  RETURNING b.tokens INTO left_after;
  IF FOUND THEN
    RETURN QUERY SELECT true, floor(left_after)::integer, 0;
    RETURN;
  END IF;
  SELECT least(p_per_minute::double precision,
      b.tokens + extract(epoch FROM p_now - b.updated_at) * p_per_minute / 60.0)
  INTO have FROM pgsched.rate_buckets b WHERE b.owner = p_owner;
  RETURN QUERY SELECT false, floor(have)::integer,
    greatest(1, ceil((p_n - have) * 60.0 / p_per_minute))::integer;
END
$$;

-- Raises PS429 when a session that acts only for itself submits faster than the SQL API's limit.
CREATE OR REPLACE FUNCTION pgsched._limit_sql_submissions(p_owner text, p_n integer) RETURNS void
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

-- Raises 22023 naming p_field unless p_key names a limit and p_value is a whole number from the
-- limit's floor (below it a shell cannot start) to p_max; p_max_is says where p_max comes from.
CREATE OR REPLACE FUNCTION pgsched._check_job_limit(
  p_field text, p_key text, p_value jsonb, p_max numeric, p_max_is text
) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
  lowest integer := CASE p_key WHEN 'memory_mb' THEN 16 WHEN 'open_files' THEN 16 ELSE 1 END;
BEGIN
  IF p_key NOT IN ('memory_mb', 'cpu_seconds', 'max_processes', 'file_size_mb', 'open_files') THEN
    PERFORM pgsched._invalid(p_field,
      'unknown limit; give memory_mb, cpu_seconds, max_processes, file_size_mb or open_files');
  END IF;
  IF jsonb_typeof(p_value) <> 'number'
      OR (p_value #>> '{}')::numeric <> trunc((p_value #>> '{}')::numeric) THEN
    PERFORM pgsched._invalid(p_field, 'must be a whole number');
  END IF;
  IF (p_value #>> '{}')::numeric NOT BETWEEN lowest AND p_max THEN
    PERFORM pgsched._invalid(p_field, format('must be from %s to %s%s', lowest, p_max, p_max_is));
  END IF;
END
$$;

/**
 * Checks a command job's limits against the ceilings and its network flag against who may grant
 * it; raises 22023 naming the field (e.g. 'limits.memory_mb'), or 42501 for network access the
 * session may not give.
 */
CREATE OR REPLACE FUNCTION pgsched._check_sandbox(p_limits jsonb, p_network boolean, p_is_command boolean)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
  s pgsched.settings;
  k text;
  v jsonb;
BEGIN
  IF p_limits IS NOT NULL AND jsonb_typeof(p_limits) <> 'object' THEN
    PERFORM pgsched._invalid('limits',
      'must be an object of memory_mb, cpu_seconds, max_processes, file_size_mb, open_files');
  END IF;
  IF coalesce(p_limits, '{}') <> '{}' AND NOT p_is_command THEN
    PERFORM pgsched._invalid('limits', 'applies to a command only');
  END IF;
  IF coalesce(p_network, false) AND NOT p_is_command THEN
    PERFORM pgsched._invalid('network', 'applies to a command only');
  END IF;
  -- Most submissions ask for neither: no settings to read.
  IF coalesce(p_limits, '{}') = '{}' AND NOT coalesce(p_network, false) THEN
    RETURN;
  END IF;
  SELECT * INTO s FROM pgsched.settings;
  FOR k, v IN SELECT * FROM jsonb_each(coalesce(p_limits, '{}')) LOOP
    PERFORM pgsched._check_job_limit('limits.' || k, k, v,
      (s.job_limit_ceilings ->> k)::numeric, ' (the ceiling an admin set)');
  END LOOP;
  IF coalesce(p_network, false) AND NOT s.job_network_allowed AND NOT pgsched._acts_for_anyone() THEN
    RAISE EXCEPTION 'pgsched: network: only an admin may give a job network access'
      USING ERRCODE = '42501', COLUMN = 'network',
        HINT = 'an admin may allow it for everyone: pgsched.set_job_limit_ceilings(network_allowed => true)';
  END IF;
END
$$;

/**
 * Admins: sets the ceilings on what a submission's limits may ask for (a JSON object of
 * memory_mb, cpu_seconds, max_processes, file_size_mb, open_files; fields not given are kept) and
 * whether sessions that act only for themselves may give their jobs network access (NULL keeps
 * it). Returns the settings as they are now.
 */
CREATE OR REPLACE FUNCTION pgsched.set_job_limit_ceilings(ceilings jsonb DEFAULT '{}', network_allowed boolean DEFAULT NULL)
RETURNS TABLE (job_limit_ceilings jsonb, job_network_allowed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  k text;
  v jsonb;
BEGIN
  IF NOT pgsched._acts_for_anyone() THEN
    RAISE EXCEPTION 'pgsched: only an admin may set job limit ceilings' USING ERRCODE = '42501';
  END IF;
  IF jsonb_typeof(ceilings) IS DISTINCT FROM 'object' THEN
    PERFORM pgsched._invalid('ceilings', 'must be a JSON object');
  END IF;
  FOR k, v IN SELECT * FROM jsonb_each(ceilings) LOOP
    PERFORM pgsched._check_job_limit(k, k, v, 1000000000, '');
  END LOOP;
  RETURN QUERY
  UPDATE pgsched.settings s
  SET job_limit_ceilings = s.job_limit_ceilings || ceilings,
    job_network_allowed = coalesce(network_allowed, s.job_network_allowed)
  RETURNING s.job_limit_ceilings, s.job_network_allowed;
END
$$;
