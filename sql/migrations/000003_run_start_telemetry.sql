-- 000003_run_start_telemetry: run_start_many and run_start also return the job's queue and
-- priority and the run's available_at and started_at, which the worker's spans and its queue-wait
-- metric need. CREATE OR REPLACE cannot change a result type, so the old functions are dropped
-- here; sql/functions/04_runs.sql creates the new ones in the same transaction. Workers of an
-- older version read the columns they know by name and keep working.
-- Cost: catalog changes only.

DROP FUNCTION IF EXISTS pgsched.run_start(bigint, integer, text);
DROP FUNCTION IF EXISTS pgsched.run_start_many(bigint[], integer[], text);
