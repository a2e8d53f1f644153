-- 000004_tick_traceparents: fire_ticks takes an optional traceparent per tick (each cron tick's
-- own span, when tracing), which the tick's run stores instead of the job's. CREATE OR REPLACE
-- cannot add an argument (it would create a second function beside the first), so the old
-- signature is dropped here; sql/functions/05_ticks.sql creates the new one in the same
-- transaction. Not breaking: the new argument defaults to NULL, so a caller of the old
-- signature gets the old behaviour.
-- Cost: catalog changes only.

DROP FUNCTION IF EXISTS pgsched.fire_ticks(bigint[], timestamptz[], timestamptz[], timestamptz[]);
