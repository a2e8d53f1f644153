-- Shared checks. Each validation raises SQLSTATE 22023 with COLUMN set to the argument at fault,
-- which the REST API turns into a problem+json naming the field; owner checks raise 42501.

-- Errors name the field at fault; inside a batch, with the element's prefix (e.g. 'jobs[3].').
CREATE OR REPLACE FUNCTION pgsched._invalid(field text, message text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  f text := coalesce(current_setting('pgsched.field_prefix', true), '') || field;
BEGIN
  RAISE EXCEPTION 'pgsched: %: %', f, message USING ERRCODE = '22023', COLUMN = f;
END
$$;

-- Raises 22023 naming p_field unless p_at is between 1970 and 9999: earlier instants are typos
-- (a run in the past starts now anyway), later ones cannot be printed as ISO 8601.
CREATE OR REPLACE FUNCTION pgsched._check_time(p_field text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF p_at < '1970-01-01T00:00:00Z' OR p_at >= '10000-01-01T00:00:00Z' THEN
    PERFORM pgsched._invalid(p_field, 'must be between 1970-01-01 and 9999-12-31');
  END IF;
END
$$;

-- Whether the session may act on other owners' jobs: the schema owner (the API connects as it),
-- a superuser, or a member of pgsched_admin. Other roles (pgsched_submitter) act on their own.
CREATE OR REPLACE FUNCTION pgsched._acts_for_anyone() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT session_user::regrole = (SELECT nspowner FROM pg_namespace WHERE nspname = 'pgsched')::regrole
    OR (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
    OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_admin')
        AND pg_has_role(session_user, 'pgsched_admin', 'MEMBER'))
$$;

-- Raises 42501 unless the session may act on a job owned by p_owner.
CREATE OR REPLACE FUNCTION pgsched._check_owner(p_owner text, what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF p_owner IS DISTINCT FROM session_user::text AND NOT pgsched._acts_for_anyone() THEN
    RAISE EXCEPTION 'pgsched: % belongs to another owner; % may act only on its own jobs', what, session_user
      USING ERRCODE = '42501';
  END IF;
END
$$;

-- Raises 42501 unless the session may act on job p_job_id (see _check_owner).
CREATE OR REPLACE FUNCTION pgsched._check_job_owner(p_job_id bigint) RETURNS void
LANGUAGE sql STABLE AS $$
  SELECT pgsched._check_owner((SELECT owner FROM pgsched.jobs WHERE id = p_job_id), format('job %s', p_job_id))
$$;

-- The values one cron field names, or NULL when it is malformed. Accepts what cron-parser
-- accepts in its common form: *, ?, numbers, month and weekday names, ranges, steps and lists.
-- L, W, # and H are refused so that the scheduler (cron-parser) never meets an expression this
-- check let through but cannot plan.
CREATE OR REPLACE FUNCTION pgsched._cron_values(field text, lo integer, hi integer, names text[])
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
CREATE OR REPLACE FUNCTION pgsched.validate_cron(expr text) RETURNS void
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

-- An integer field of a batch element, or p_default when absent.
CREATE OR REPLACE FUNCTION pgsched._json_int(e jsonb, k text, p_default integer) RETURNS integer
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
CREATE OR REPLACE FUNCTION pgsched._json_text(e jsonb, k text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF NOT e ? k OR jsonb_typeof(e -> k) = 'null' THEN RETURN NULL; END IF;
  IF jsonb_typeof(e -> k) <> 'string' THEN PERFORM pgsched._invalid(k, 'must be a string'); END IF;
  RETURN e ->> k;
END
$$;

-- A time field of a batch element (ISO 8601), or NULL when absent. Checked by pattern rather
-- than by catching the cast's error, which would open a subtransaction per job.
CREATE OR REPLACE FUNCTION pgsched._json_time(e jsonb, k text) RETURNS timestamptz
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
