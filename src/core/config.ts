/** @module Configuration: one pure resolver from explicit options and environment to a frozen object. */
import { PgschedError } from './errors.ts'
import { JOB_LIMIT_FIELDS, type JobLimits, SANDBOX_MODES, type SandboxMode } from './types.ts'

/** Default HTTP port. */
export const PORT_DEFAULT = 8080
/** Default number of runs one worker process executes at once. */
export const WORKER_CONCURRENCY_DEFAULT = 10
/** How often a follower scheduler tries to take the leader lock. */
export const LEADER_POLL_SECONDS_DEFAULT = 5
/** How often a worker heartbeats. */
export const HEARTBEAT_INTERVAL_SECONDS_DEFAULT = 10
/** How long a worker may stay silent before the leader declares it dead and rescues its runs. */
export const HEARTBEAT_TIMEOUT_SECONDS_DEFAULT = 60
/** How long a worker told to stop lets its running runs finish before handing them back. */
export const SHUTDOWN_GRACE_SECONDS_DEFAULT = 30
/** Days of run history the leader keeps (dead letters and unfinished runs stay until handled). */
export const HISTORY_RETENTION_DAYS_DEFAULT = 30
/** Submissions a minute per user over REST. */
export const RATE_LIMIT_PER_MINUTE_DEFAULT = 1000
/** Grace between SIGTERM and SIGKILL when a command times out or is cancelled. */
export const KILL_GRACE_SECONDS_DEFAULT = 10
/** Where embedded PostgreSQL, the dev JWT secret and the dev password live. */
export const DATA_DIR_DEFAULT = '.pgsched'
/** Where task handlers are loaded from, one module per task. */
export const TASKS_DIR_DEFAULT = 'tasks'
/** Port of the embedded PostgreSQL server. */
export const EMBEDDED_PG_PORT_DEFAULT = 54329
/** How command jobs are isolated unless PGSCHED_SANDBOX says otherwise. */
export const SANDBOX_DEFAULT: SandboxMode = 'bwrap'
/**
 * Limits of a command job that asks for none (PGSCHED_JOB_MEMORY_MB and friends): enough for
 * ordinary shell work, small enough that one job cannot starve the worker's host.
 */
export const JOB_LIMITS_DEFAULT = Object.freeze({
  memory_mb: 512,
  cpu_seconds: 3600,
  max_processes: 256,
  file_size_mb: 1024,
  open_files: 1024,
} satisfies Required<JobLimits>)

/** The resolved configuration of a pgsched process. */
export interface PgschedConfig {
  /** Postgres URL; absent means embedded PostgreSQL (dev mode). */
  readonly databaseUrl: string | undefined
  readonly port: number
  /** HS256 secret for tokens; in dev mode generated once and kept in the data folder. */
  readonly jwtSecret: string | undefined
  /** JWKS URL of an identity provider whose tokens are also accepted. */
  readonly jwksUrl: string | undefined
  readonly jwtIssuer: string | undefined
  readonly jwtAudience: string | undefined
  readonly workerConcurrency: number
  readonly leaderPollSeconds: number
  readonly killGraceSeconds: number
  readonly heartbeatIntervalSeconds: number
  /** At least twice the heartbeat interval, so that one late heartbeat is not a death. */
  readonly heartbeatTimeoutSeconds: number
  readonly shutdownGraceSeconds: number
  readonly rateLimitPerMinute: number
  /** Days of run history kept before the leader drops a day's partitions. */
  readonly historyRetentionDays: number
  readonly dataDir: string
  readonly tasksDir: string
  readonly embeddedPgPort: number
  readonly logLevel: string
  /** Address the API listens on; unset: 127.0.0.1 with embedded PostgreSQL, else all interfaces. */
  readonly host: string | undefined
  /** How a worker isolates command jobs (PGSCHED_SANDBOX). */
  readonly sandbox: SandboxMode
  /** The unprivileged user command jobs run as (PGSCHED_JOB_USER); unset: the worker's default. */
  readonly jobUser: string | undefined
  /** Limits of a command job that does not set them (PGSCHED_JOB_MEMORY_MB, …). */
  readonly jobLimits: Readonly<Required<JobLimits>>
  /** Whether non-admin REST submitters may ask for `network: true` (PGSCHED_JOB_NETWORK). */
  readonly jobNetwork: 'deny' | 'allow'
  /** How an attempt's span relates to its submission's (PGSCHED_TRACE_LINK_MODE; tracing.ts). */
  readonly traceLinkMode: 'link' | 'parent'
  /**
   * Port of the scheduler's and worker's own GET /metrics (PGSCHED_METRICS_PORT); unset: none for
   * `start` and `api` (the API serves /metrics), any free port (printed) for `scheduler`/`worker`.
   */
  readonly metricsPort: number | undefined
  /** Address of that port (PGSCHED_METRICS_HOST): 127.0.0.1 unless said otherwise. */
  readonly metricsHost: string
}

/** Environment variables read by pgsched, by name. */
export type ConfigEnv = Readonly<Record<string, string | undefined>>

function int(env: ConfigEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const n = /^\d{1,9}$/.test(raw) ? Number(raw) : Number.NaN
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new PgschedError(
      'config',
      `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    )
  }
  return n
}

function oneOf<T extends string>(
  env: ConfigEnv,
  name: string,
  allowed: readonly T[],
  fallback: T,
): T {
  const raw = str(env, name)
  if (raw === undefined) return fallback
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new PgschedError(
      'config',
      `${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(raw)}`,
    )
  }
  return raw as T
}

// postgres.js reads anything else as a host name (`notaurl` became "getaddrinfo ENOTFOUND base").
function databaseUrl(env: ConfigEnv): string | undefined {
  const raw = str(env, 'DATABASE_URL')
  if (raw === undefined) return undefined
  let url: URL | undefined
  try {
    url = new URL(raw)
  } catch {
    url = undefined
  }
  if (url === undefined || !['postgres:', 'postgresql:'].includes(url.protocol)) {
    // The value may hold a password: name the variable, never echo it.
    throw new PgschedError(
      'config',
      'DATABASE_URL must be a postgres:// or postgresql:// URL (e.g. postgres://user:password@host:5432/db)',
    )
  }
  return raw
}

function str(env: ConfigEnv, name: string): string | undefined {
  const v = env[name]
  return v === undefined || v === '' ? undefined : v
}

/**
 * Resolves configuration: explicit `overrides` win over `env`, which wins over defaults.
 * Invalid values throw a PgschedError naming the variable.
 */
export function resolveConfig(
  env: ConfigEnv,
  overrides: Partial<PgschedConfig> = {},
): PgschedConfig {
  const jwtSecret = str(env, 'PGSCHED_JWT_SECRET')
  if (jwtSecret !== undefined && jwtSecret.length < 32) {
    throw new PgschedError('config', 'PGSCHED_JWT_SECRET must be at least 32 characters')
  }
  const defaults = {
    databaseUrl: databaseUrl(env),
    port: int(env, 'PORT', PORT_DEFAULT, 0, 65535),
    jwtSecret,
    jwksUrl: str(env, 'PGSCHED_JWKS_URL'),
    jwtIssuer: str(env, 'PGSCHED_JWT_ISSUER'),
    jwtAudience: str(env, 'PGSCHED_JWT_AUDIENCE'),
    workerConcurrency: int(env, 'PGSCHED_WORKER_CONCURRENCY', WORKER_CONCURRENCY_DEFAULT, 1, 1000),
    leaderPollSeconds: int(
      env,
      'PGSCHED_LEADER_POLL_SECONDS',
      LEADER_POLL_SECONDS_DEFAULT,
      1,
      3600,
    ),
    killGraceSeconds: int(env, 'PGSCHED_KILL_GRACE_SECONDS', KILL_GRACE_SECONDS_DEFAULT, 0, 3600),
    heartbeatIntervalSeconds: int(
      env,
      'PGSCHED_HEARTBEAT_INTERVAL_SECONDS',
      HEARTBEAT_INTERVAL_SECONDS_DEFAULT,
      1,
      3600,
    ),
    heartbeatTimeoutSeconds: int(
      env,
      'PGSCHED_HEARTBEAT_TIMEOUT_SECONDS',
      HEARTBEAT_TIMEOUT_SECONDS_DEFAULT,
      2,
      86400,
    ),
    shutdownGraceSeconds: int(
      env,
      'PGSCHED_SHUTDOWN_GRACE_SECONDS',
      SHUTDOWN_GRACE_SECONDS_DEFAULT,
      0,
      86400,
    ),
    rateLimitPerMinute: int(
      env,
      'PGSCHED_RATE_LIMIT_PER_MINUTE',
      RATE_LIMIT_PER_MINUTE_DEFAULT,
      1,
      100_000_000,
    ),
    historyRetentionDays: int(
      env,
      'PGSCHED_HISTORY_RETENTION_DAYS',
      HISTORY_RETENTION_DAYS_DEFAULT,
      1,
      36_500,
    ),
    dataDir: str(env, 'PGSCHED_DATA_DIR') ?? DATA_DIR_DEFAULT,
    tasksDir: str(env, 'PGSCHED_TASKS_DIR') ?? TASKS_DIR_DEFAULT,
    embeddedPgPort: int(env, 'PGSCHED_EMBEDDED_PG_PORT', EMBEDDED_PG_PORT_DEFAULT, 1, 65535),
    logLevel: str(env, 'PGSCHED_LOG_LEVEL') ?? 'info',
    host: str(env, 'PGSCHED_HOST'),
    sandbox: oneOf(env, 'PGSCHED_SANDBOX', SANDBOX_MODES, SANDBOX_DEFAULT),
    jobUser: str(env, 'PGSCHED_JOB_USER'),
    jobLimits: Object.freeze(
      Object.fromEntries(
        JOB_LIMIT_FIELDS.map((f) => [
          f,
          int(env, `PGSCHED_JOB_${f.toUpperCase()}`, JOB_LIMITS_DEFAULT[f], 1, 1_000_000_000),
        ]),
      ) as Required<JobLimits>,
    ),
    jobNetwork: oneOf(env, 'PGSCHED_JOB_NETWORK', ['deny', 'allow'] as const, 'deny'),
    traceLinkMode: oneOf(env, 'PGSCHED_TRACE_LINK_MODE', ['link', 'parent'] as const, 'link'),
    metricsPort:
      str(env, 'PGSCHED_METRICS_PORT') === undefined
        ? undefined
        : int(env, 'PGSCHED_METRICS_PORT', 0, 0, 65535),
    metricsHost: str(env, 'PGSCHED_METRICS_HOST') ?? '127.0.0.1',
  } satisfies PgschedConfig
  const given = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined))
  const config = Object.freeze({ ...defaults, ...given })
  if (config.heartbeatTimeoutSeconds < 2 * config.heartbeatIntervalSeconds) {
    throw new PgschedError(
      'config',
      `PGSCHED_HEARTBEAT_TIMEOUT_SECONDS (${config.heartbeatTimeoutSeconds}) must be at least twice PGSCHED_HEARTBEAT_INTERVAL_SECONDS (${config.heartbeatIntervalSeconds})`,
    )
  }
  return config
}
