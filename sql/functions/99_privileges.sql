-- Privileges of the SQL API, applied last, after every function exists. Public functions are
-- SECURITY DEFINER and callable by pgsched_submitter only (set_degradation and
-- set_job_limit_ceilings check for an admin themselves); no pgsched function is callable by PUBLIC.

-- Grants the above; safe to run again. An operator who had to create the roles by hand (no
-- CREATEROLE at migration) runs `SELECT pgsched._grant_sql_api()` once they exist.
CREATE OR REPLACE FUNCTION pgsched._grant_sql_api() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  f regprocedure;
  submitter boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsched_submitter');
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'pgsched'::regnamespace LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
  IF submitter THEN
    GRANT USAGE ON SCHEMA pgsched TO pgsched_submitter;
    FOR f IN
      SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'pgsched'::regnamespace AND p.prosecdef
    LOOP
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pgsched_submitter', f);
    END LOOP;
  END IF;
END
$$;

SELECT pgsched._grant_sql_api();
