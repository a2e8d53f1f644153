-- 000005_partitioned_history: runs, run_attempts and run_events become RANGE-partitioned tables,
-- one partition per UTC day, so the leader's pruner (pgsched.maintain_history) drops a whole day
-- of history instead of deleting rows.
--
-- Run ids are day-encoded: id = (UTC day number of now() << 32) | (nextval(runs_id_seq) & 0xFFFFFFFF).
-- runs is partitioned by id, run_attempts and run_events by run_id, with the same day bounds
-- (day d covers [d << 32, (d + 1) << 32)), so a lookup by run id prunes to one partition and a
-- day's three partitions are dropped together. Day partitions are named <table>_dYYYYMMDD; each
-- table also has a DEFAULT partition (<table>_default: kept runs of pruned days, anything outside
-- the created days) and <table>_legacy, holding the rows written before this migration (ids
-- below the first day bound), which the pruner treats as the day before the migration's.
--
-- Changes beside partitioning:
-- - runs.id and run_events.id lose their identity: ids come from DEFAULT expressions on plain
--   sequences (nothing writes OVERRIDING SYSTEM VALUE).
-- - run_events' primary key becomes (run_id, id) (a partitioned table's key includes the
--   partition key); it replaces run_events_run_idx.
-- - The foreign keys run_attempts -> runs and run_events -> runs are dropped: detaching a
--   referenced partition re-checks every referencing row (a join over the whole history) and a
--   referenced partition cannot be dropped while attached. Jobs are never deleted, and the three
--   tables of a day are dropped together. runs -> jobs stays.
-- - UNIQUE (job_id, scheduled_for) cannot be declared on runs (it lacks the partition key); each
--   partition has it as its own unique index, which INSERT ... ON CONFLICT DO NOTHING (no
--   conflict target) still honours. A tick's duplicate is always created the same UTC day as
--   the first (fire_ticks moves the job's next_run_at in the same statement), so it still fires
--   at most once.
--
-- Cost: the existing tables are renamed and attached as the legacy partitions, not copied.
-- Attaching scans each once to check the partition bound (ACCESS EXCLUSIVE on the three tables
-- for the migration's transaction); run_events gets its new primary key index built. Everything
-- else is catalog changes.

DO $$
DECLARE
  first_day bigint := floor(extract(epoch FROM now()) / 86400)::bigint;
  bound bigint := first_day << 32;
  next_event bigint;
  d integer;
  t text;
  ix record;
BEGIN
  SELECT coalesce(max(id), 0) + 1 INTO next_event FROM pgsched.run_events;

  -- The runs triggers move to the parent: sql/functions/ creates them again there.
  DROP TRIGGER IF EXISTS runs_log_insert ON pgsched.runs;
  DROP TRIGGER IF EXISTS runs_log_update ON pgsched.runs;
  DROP TRIGGER IF EXISTS runs_settled ON pgsched.runs;
  DROP TRIGGER IF EXISTS runs_settled_insert ON pgsched.runs;
  ALTER TABLE pgsched.run_attempts DROP CONSTRAINT run_attempts_run_id_fkey;
  ALTER TABLE pgsched.run_events DROP CONSTRAINT run_events_run_id_fkey;
  ALTER TABLE pgsched.runs ALTER COLUMN id DROP IDENTITY;
  ALTER TABLE pgsched.run_events ALTER COLUMN id DROP IDENTITY;

  -- The old tables become the legacy partitions; their index names make way for the parents'
  -- (constraint names are chosen unique in the schema, so the parents name theirs explicitly).
  ALTER TABLE pgsched.runs RENAME TO runs_legacy;
  ALTER TABLE pgsched.runs_legacy RENAME CONSTRAINT runs_pkey TO runs_legacy_pkey;
  ALTER TABLE pgsched.runs_legacy RENAME CONSTRAINT runs_job_id_scheduled_for_key
    TO runs_legacy_job_id_scheduled_for_key;
  ALTER INDEX pgsched.runs_job_idx RENAME TO runs_legacy_job_idx;
  ALTER INDEX pgsched.runs_dead_idx RENAME TO runs_legacy_dead_idx;
  ALTER INDEX pgsched.runs_waiting_idx RENAME TO runs_legacy_waiting_idx;
  ALTER INDEX pgsched.runs_status_waiting_idx RENAME TO runs_legacy_status_waiting_idx;
  ALTER INDEX pgsched.runs_active_idx RENAME TO runs_legacy_active_idx;
  ALTER TABLE pgsched.run_attempts RENAME TO run_attempts_legacy;
  ALTER TABLE pgsched.run_attempts_legacy RENAME CONSTRAINT run_attempts_pkey TO run_attempts_legacy_pkey;
  ALTER TABLE pgsched.run_events RENAME TO run_events_legacy;
  ALTER TABLE pgsched.run_events_legacy DROP CONSTRAINT run_events_pkey;
  DROP INDEX pgsched.run_events_run_idx;
  ALTER TABLE pgsched.run_events_legacy ADD CONSTRAINT run_events_legacy_pkey PRIMARY KEY (run_id, id);
  CREATE SEQUENCE pgsched.runs_id_seq AS bigint;
  EXECUTE format('CREATE SEQUENCE pgsched.run_events_id_seq AS bigint START WITH %s', next_event);

  -- The parents take the legacy tables' columns, defaults and CHECK constraints (same names, so
  -- the legacy tables attach as they are) and their plain indexes.
  CREATE TABLE pgsched.runs (LIKE pgsched.runs_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (id);
  ALTER TABLE pgsched.runs ALTER COLUMN id SET DEFAULT
    (floor(extract(epoch FROM now()) / 86400)::bigint << 32) | (nextval('pgsched.runs_id_seq') & 4294967295);
  ALTER TABLE pgsched.runs ADD PRIMARY KEY (id),
    ADD CONSTRAINT runs_job_id_fkey FOREIGN KEY (job_id) REFERENCES pgsched.jobs (id) ON DELETE CASCADE;
  ALTER SEQUENCE pgsched.runs_id_seq OWNED BY pgsched.runs.id;
  CREATE TABLE pgsched.run_attempts (LIKE pgsched.run_attempts_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (run_id);
  ALTER TABLE pgsched.run_attempts ADD PRIMARY KEY (run_id, attempt);
  CREATE TABLE pgsched.run_events (LIKE pgsched.run_events_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (run_id);
  ALTER TABLE pgsched.run_events ALTER COLUMN id SET DEFAULT nextval('pgsched.run_events_id_seq'),
    ADD PRIMARY KEY (run_id, id);
  ALTER SEQUENCE pgsched.run_events_id_seq OWNED BY pgsched.run_events.id;
  FOR ix IN
    SELECT pg_get_indexdef(x.indexrelid) AS def FROM pg_index x
    WHERE x.indrelid = 'pgsched.runs_legacy'::regclass AND NOT x.indisunique
  LOOP
    EXECUTE replace(ix.def, 'runs_legacy', 'runs');
  END LOOP;

  -- The bound as a CHECK, so that attaching does not scan a second time.
  EXECUTE format('ALTER TABLE pgsched.runs_legacy ADD CONSTRAINT runs_legacy_bound CHECK (id < %s)', bound);
  EXECUTE format('ALTER TABLE pgsched.run_attempts_legacy ADD CONSTRAINT run_attempts_legacy_bound CHECK (run_id < %s)', bound);
  EXECUTE format('ALTER TABLE pgsched.run_events_legacy ADD CONSTRAINT run_events_legacy_bound CHECK (run_id < %s)', bound);

  FOREACH t IN ARRAY ARRAY['runs', 'run_attempts', 'run_events'] LOOP
    EXECUTE format('ALTER TABLE pgsched.%I ATTACH PARTITION pgsched.%I FOR VALUES FROM (MINVALUE) TO (%s)',
      t, t || '_legacy', bound);
    EXECUTE format('ALTER TABLE pgsched.%I DROP CONSTRAINT %I', t || '_legacy', t || '_legacy_bound');
    EXECUTE format('CREATE TABLE pgsched.%I PARTITION OF pgsched.%I DEFAULT', t || '_default', t);
  END LOOP;
  CREATE UNIQUE INDEX runs_default_job_id_scheduled_for_key ON pgsched.runs_default (job_id, scheduled_for);

  -- Today and the next three days; the leader keeps creating them ahead (maintain_history).
  FOR d IN first_day .. first_day + 3 LOOP
    FOREACH t IN ARRAY ARRAY['runs', 'run_attempts', 'run_events'] LOOP
      EXECUTE format('CREATE TABLE pgsched.%I PARTITION OF pgsched.%I FOR VALUES FROM (%s) TO (%s)',
        t || to_char(date '1970-01-01' + d::integer, '"_d"YYYYMMDD'), t, d::bigint << 32, (d::bigint + 1) << 32);
    END LOOP;
    EXECUTE format('CREATE UNIQUE INDEX %I ON pgsched.%I (job_id, scheduled_for)',
      'runs' || to_char(date '1970-01-01' + d::integer, '"_d"YYYYMMDD') || '_job_id_scheduled_for_key',
      'runs' || to_char(date '1970-01-01' + d::integer, '"_d"YYYYMMDD'));
  END LOOP;
END
$$;
