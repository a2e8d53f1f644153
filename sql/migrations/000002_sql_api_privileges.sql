-- 000002_sql_api_privileges: least privilege for applications that use the SQL API.
-- Cost: catalog changes only; no table locks, no backfill. Creating roles needs CREATEROLE;
-- without it the migration says so (NOTICE) and grants nothing to roles it could not create.
--
-- An application's database role needs no privilege on pgsched's tables: grant it
-- pgsched_submitter, which may execute the public API functions only. Those run as their owner
-- (SECURITY DEFINER, fixed search_path) and act only on jobs whose owner is the caller's
-- session_user; members of pgsched_admin act on every job.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_submitter') THEN
    CREATE ROLE pgsched_submitter NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_admin') THEN
    CREATE ROLE pgsched_admin NOLOGIN IN ROLE pgsched_submitter;
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'pgsched: no CREATEROLE privilege: create roles pgsched_submitter and pgsched_admin, then grant them as in 000002_sql_api_privileges.sql';
END
$$;

DO $$
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
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_submitter') THEN
    GRANT USAGE ON SCHEMA pgsched TO pgsched_submitter;
  END IF;
END
$$;
