/**
 * @module The names of the figures the targets are checked against: workloads report under these
 * names, and the report looks them up. `system` is one of SYSTEMS.
 */

/** The systems measured. */
export const SYSTEMS = {
  pgsched: 'pgsched',
  graphile: 'graphile-worker',
  pgboss: 'pg-boss',
  /** The REST submit floor: bare Hono + jose + a group-committed insert (bench/lib/rest-floor.ts). */
  restFloor: 'REST floor',
} as const

export const METRIC = {
  restSubmit64: 'REST submit, 64 clients',
  restSubmit64P99: 'REST submit p99, 64 clients',
  restSubmit1P50: 'REST submit p50, 1 client',
  restSubmit1P99: 'REST submit p99, 1 client',
  sqlSubmit: 'SQL submit, one job per transaction, 16 connections',
  batchSubmit: 'batch submit, 1,000 jobs per call',
  drainTask10: 'drain no-op tasks, concurrency 10',
  drainTask25: 'drain no-op tasks, concurrency 25',
  drainCommand10: 'drain `true` commands, concurrency 10, sandbox bwrap',
  drainCommand25: 'drain `true` commands, concurrency 25, sandbox bwrap',
  drainCommand10Rlimits: 'drain `true` commands, concurrency 10, sandbox rlimits',
  drainCommand10None: 'drain `true` commands, concurrency 10, sandbox none',
  spawnFloor10: 'spawn floor: `/bin/sh -c true` from a bare Node loop, concurrency 10',
  commandFloorRatioNone: 'command drain ÷ spawn floor, sandbox none, concurrency 10',
  commandFloorRatioRlimits: 'command drain ÷ spawn floor, sandbox rlimits, concurrency 10',
  commandFloorRatioBwrap: 'command drain ÷ spawn floor, sandbox bwrap, concurrency 10',
  commandBwrapOverNone: 'command drain, sandbox bwrap ÷ none, concurrency 10',
  sandboxCostBwrap: 'sandbox cost per command, bwrap − none (1000/rate difference)',
  sandboxCostBwrapSlot: 'sandbox cost per command per slot, bwrap − none, concurrency 10',
  sandboxCostRlimits: 'sandbox cost per command, rlimits − none (1000/rate difference)',
  workerRss25: 'worker RSS, concurrency 25',
  pickup50P50: 'pickup p50 at 50 runs/s',
  pickup50P95: 'pickup p95 at 50 runs/s',
  pickup50P99: 'pickup p99 at 50 runs/s',
  pickup1000P50: 'pickup p50 at 1,000 runs/s',
  pickup1000P95: 'pickup p95 at 1,000 runs/s',
  pickup1000P99: 'pickup p99 at 1,000 runs/s',
  fanOutAll: '10,000 schedules due at once: all runs enqueued after',
  fanOutLatenessP99: '10,000 schedules: tick lateness p99',
  submitEmptyP50: 'submit p50, empty queue',
  submitDeepP50: 'submit p50, deep queue',
  claimEmptyP50: 'claim p50, empty queue',
  claimDeepP50: 'claim p50, deep queue',
  telemetryOffTask10: 'drain no-op tasks, concurrency 10, telemetry off',
  telemetryOnTask10: 'drain no-op tasks, concurrency 10, telemetry on',
  telemetryRatioTask10: 'no-op tasks: telemetry on ÷ off (median of pairs)',
  telemetryCpuOffTask: 'worker CPU per no-op task, telemetry off',
  telemetryCpuOnTask: 'worker CPU per no-op task, telemetry on',
  telemetrySpansPerTask: 'spans received per no-op task, telemetry on',
  telemetryOffCommand10: 'drain `true` commands, concurrency 10, telemetry off',
  telemetryOnCommand10: 'drain `true` commands, concurrency 10, telemetry on',
  telemetryRatioCommand10: '`true` commands: telemetry on ÷ off (median of pairs)',
} as const
