-- 000002_clock_parameters: rescue and take_submission_tokens take an optional p_now, so tests pin
-- the clock instead of sleeping. CREATE OR REPLACE cannot add an argument (it would create a second
-- function beside the first), so the old signatures are dropped here; sql/functions/ creates the
-- new ones in the same transaction.
-- Cost: catalog changes only.

DROP FUNCTION IF EXISTS pgsched.rescue(interval, integer);
DROP FUNCTION IF EXISTS pgsched.take_submission_tokens(text, integer, integer);
