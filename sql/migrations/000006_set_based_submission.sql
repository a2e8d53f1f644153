-- 000006_set_based_submission: submit_jobs validates and inserts a batch with set-based
-- statements (sql/functions/03_submit.sql). _submit_job takes the job's limits and network flag
-- and stores them with the job, so the old signature is dropped (and _store_sandbox, which wrote
-- them with a second UPDATE); the per-element loop _submit_jobs_one_by_one is gone. All internal:
-- not breaking. runs.executor_job_id is no longer written (an enqueue no longer writes the run a
-- second time; the executor job is found by its key, pgsched_run:<run id>); the column stays,
-- NULL for new runs, until the partitioning of runs drops it.
-- Cost: catalog changes only.

DROP FUNCTION IF EXISTS pgsched._submit_job(text, text, text, jsonb, text, text, timestamptz,
  integer, integer, integer, integer, text, text, text, text, bigint[], text);
DROP FUNCTION IF EXISTS pgsched._submit_jobs_one_by_one(jsonb, text, text);
DROP FUNCTION IF EXISTS pgsched._store_sandbox(bigint, jsonb, boolean);
