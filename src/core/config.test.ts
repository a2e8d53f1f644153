import { describe, expect, it } from 'vitest'

import {
  DATA_DIR_DEFAULT,
  EMBEDDED_PG_PORT_DEFAULT,
  HEARTBEAT_INTERVAL_SECONDS_DEFAULT,
  HEARTBEAT_TIMEOUT_SECONDS_DEFAULT,
  HISTORY_RETENTION_DAYS_DEFAULT,
  JOB_LIMITS_DEFAULT,
  KILL_GRACE_SECONDS_DEFAULT,
  LEADER_POLL_SECONDS_DEFAULT,
  PORT_DEFAULT,
  RATE_LIMIT_PER_MINUTE_DEFAULT,
  resolveConfig,
  SHUTDOWN_GRACE_SECONDS_DEFAULT,
  TASKS_DIR_DEFAULT,
  WORKER_CONCURRENCY_DEFAULT,
} from './config.ts'
import { PgschedError } from './errors.ts'

/** A secret of exactly the minimum length, 32 characters. */
const SECRET = '0123456789abcdef0123456789abcdef'

/** Calls resolveConfig and returns what it threw. */
function thrown(env: Record<string, string | undefined>): PgschedError {
  try {
    resolveConfig(env)
  } catch (e) {
    expect(e).toBeInstanceOf(PgschedError)
    return e as PgschedError
  }
  throw new Error(`resolveConfig accepted ${JSON.stringify(env)}`)
}

describe('resolveConfig', () => {
  it('gives the defaults for an empty environment', () => {
    expect(resolveConfig({})).toEqual({
      databaseUrl: undefined,
      port: PORT_DEFAULT,
      jwtSecret: undefined,
      jwksUrl: undefined,
      jwtIssuer: undefined,
      jwtAudience: undefined,
      workerConcurrency: WORKER_CONCURRENCY_DEFAULT,
      leaderPollSeconds: LEADER_POLL_SECONDS_DEFAULT,
      killGraceSeconds: KILL_GRACE_SECONDS_DEFAULT,
      heartbeatIntervalSeconds: HEARTBEAT_INTERVAL_SECONDS_DEFAULT,
      heartbeatTimeoutSeconds: HEARTBEAT_TIMEOUT_SECONDS_DEFAULT,
      shutdownGraceSeconds: SHUTDOWN_GRACE_SECONDS_DEFAULT,
      rateLimitPerMinute: RATE_LIMIT_PER_MINUTE_DEFAULT,
      historyRetentionDays: HISTORY_RETENTION_DAYS_DEFAULT,
      dataDir: DATA_DIR_DEFAULT,
      tasksDir: TASKS_DIR_DEFAULT,
      embeddedPgPort: EMBEDDED_PG_PORT_DEFAULT,
      logLevel: 'info',
      host: undefined,
      sandbox: 'bwrap',
      jobUser: undefined,
      jobLimits: JOB_LIMITS_DEFAULT,
      jobNetwork: 'deny',
      traceLinkMode: 'link',
      metricsPort: undefined,
      metricsHost: '127.0.0.1',
    })
    expect(JOB_LIMITS_DEFAULT.memory_mb).toBe(512)
    expect(PORT_DEFAULT).toBe(8080)
    expect([HEARTBEAT_INTERVAL_SECONDS_DEFAULT, HEARTBEAT_TIMEOUT_SECONDS_DEFAULT]).toEqual([
      10, 60,
    ])
  })

  it('reads every variable from the environment', () => {
    const config = resolveConfig({
      DATABASE_URL: 'postgres://u:p@db:5432/pgsched',
      PORT: '9090',
      PGSCHED_JWT_SECRET: SECRET,
      PGSCHED_JWKS_URL: 'https://idp.example/.well-known/jwks.json',
      PGSCHED_JWT_ISSUER: 'https://idp.example/',
      PGSCHED_JWT_AUDIENCE: 'pgsched-api',
      PGSCHED_WORKER_CONCURRENCY: '4',
      PGSCHED_LEADER_POLL_SECONDS: '2',
      PGSCHED_KILL_GRACE_SECONDS: '0',
      PGSCHED_HEARTBEAT_INTERVAL_SECONDS: '1',
      PGSCHED_HEARTBEAT_TIMEOUT_SECONDS: '3',
      PGSCHED_SHUTDOWN_GRACE_SECONDS: '5',
      PGSCHED_RATE_LIMIT_PER_MINUTE: '60',
      PGSCHED_HISTORY_RETENTION_DAYS: '7',
      PGSCHED_DATA_DIR: '/var/lib/pgsched',
      PGSCHED_TASKS_DIR: './handlers',
      PGSCHED_EMBEDDED_PG_PORT: '6543',
      PGSCHED_LOG_LEVEL: 'debug',
      PGSCHED_HOST: '0.0.0.0',
      PGSCHED_SANDBOX: 'rlimits',
      PGSCHED_JOB_USER: 'jobs',
      PGSCHED_JOB_MEMORY_MB: '256',
      PGSCHED_JOB_CPU_SECONDS: '60',
      PGSCHED_JOB_MAX_PROCESSES: '32',
      PGSCHED_JOB_FILE_SIZE_MB: '10',
      PGSCHED_JOB_OPEN_FILES: '64',
      PGSCHED_JOB_NETWORK: 'allow',
      PGSCHED_TRACE_LINK_MODE: 'parent',
      PGSCHED_METRICS_PORT: '9464',
      PGSCHED_METRICS_HOST: '0.0.0.0',
    })
    expect(config).toEqual({
      databaseUrl: 'postgres://u:p@db:5432/pgsched',
      port: 9090,
      jwtSecret: SECRET,
      jwksUrl: 'https://idp.example/.well-known/jwks.json',
      jwtIssuer: 'https://idp.example/',
      jwtAudience: 'pgsched-api',
      workerConcurrency: 4,
      leaderPollSeconds: 2,
      killGraceSeconds: 0,
      heartbeatIntervalSeconds: 1,
      heartbeatTimeoutSeconds: 3,
      shutdownGraceSeconds: 5,
      rateLimitPerMinute: 60,
      historyRetentionDays: 7,
      dataDir: '/var/lib/pgsched',
      tasksDir: './handlers',
      embeddedPgPort: 6543,
      logLevel: 'debug',
      host: '0.0.0.0',
      sandbox: 'rlimits',
      jobUser: 'jobs',
      jobLimits: {
        memory_mb: 256,
        cpu_seconds: 60,
        max_processes: 32,
        file_size_mb: 10,
        open_files: 64,
      },
      jobNetwork: 'allow',
      traceLinkMode: 'parent',
      metricsPort: 9464,
      metricsHost: '0.0.0.0',
    })
  })

  it('treats empty variables as unset', () => {
    expect(
      resolveConfig({
        DATABASE_URL: '',
        PORT: '',
        PGSCHED_JWT_SECRET: '',
        PGSCHED_WORKER_CONCURRENCY: '',
        PGSCHED_DATA_DIR: '',
        PGSCHED_LOG_LEVEL: '',
      }),
    ).toEqual(resolveConfig({}))
  })

  it('ignores variables it does not know', () => {
    expect(resolveConfig({ HOME: '/root', PGSCHED_COLOUR: 'red' })).toEqual(resolveConfig({}))
  })

  it('accepts the bounds of each integer', () => {
    expect(resolveConfig({ PORT: '0' }).port).toBe(0)
    expect(resolveConfig({ PORT: '65535' }).port).toBe(65535)
    expect(resolveConfig({ PGSCHED_WORKER_CONCURRENCY: '1' }).workerConcurrency).toBe(1)
    expect(resolveConfig({ PGSCHED_WORKER_CONCURRENCY: '1000' }).workerConcurrency).toBe(1000)
    expect(resolveConfig({ PGSCHED_KILL_GRACE_SECONDS: '3600' }).killGraceSeconds).toBe(3600)
  })

  it.each([
    ['PORT', 'abc'],
    ['PORT', '80abc'],
    ['PORT', '8080.5'],
    ['PORT', '-1'],
    ['PORT', '65536'],
    ['PGSCHED_WORKER_CONCURRENCY', '0'],
    ['PGSCHED_WORKER_CONCURRENCY', '1001'],
    ['PGSCHED_WORKER_CONCURRENCY', 'ten'],
    ['PGSCHED_LEADER_POLL_SECONDS', '0'],
    ['PGSCHED_LEADER_POLL_SECONDS', 'Infinity'],
    ['PGSCHED_KILL_GRACE_SECONDS', '-5'],
    ['PGSCHED_KILL_GRACE_SECONDS', 'NaN'],
    ['PGSCHED_HEARTBEAT_INTERVAL_SECONDS', '0'],
    ['PGSCHED_HEARTBEAT_TIMEOUT_SECONDS', '1'],
    ['PGSCHED_SHUTDOWN_GRACE_SECONDS', '-1'],
    ['PGSCHED_RATE_LIMIT_PER_MINUTE', '0'],
    ['PGSCHED_HISTORY_RETENTION_DAYS', '0'],
    ['PGSCHED_EMBEDDED_PG_PORT', '0'],
    ['PGSCHED_EMBEDDED_PG_PORT', '70000'],
    ['PGSCHED_SANDBOX', 'docker'],
    ['PGSCHED_JOB_NETWORK', 'yes'],
    ['PGSCHED_TRACE_LINK_MODE', 'child'],
    ['PGSCHED_METRICS_PORT', '70000'],
    ['PGSCHED_JOB_MEMORY_MB', '0'],
    ['PGSCHED_JOB_OPEN_FILES', 'many'],
  ])('refuses %s=%j with a config error naming the variable', (name, value) => {
    const err = thrown({ [name]: value })
    expect(err.code).toBe('config')
    expect(err.message).toContain(name)
    expect(err.message).toContain(JSON.stringify(value))
  })

  it.each(['notaurl', 'mysql://u:secret-pw@db/x', 'db.example:5432'])(
    'refuses DATABASE_URL=%j, naming the variable and not echoing it',
    (value) => {
      const err = thrown({ DATABASE_URL: value })
      expect(err.code).toBe('config')
      expect(err.message).toContain('DATABASE_URL must be a postgres://')
      expect(err.message).not.toContain(value)
    },
  )

  it('refuses a heartbeat timeout shorter than two heartbeat intervals', () => {
    const err = thrown({
      PGSCHED_HEARTBEAT_INTERVAL_SECONDS: '10',
      PGSCHED_HEARTBEAT_TIMEOUT_SECONDS: '19',
    })
    expect(err.message).toMatch(/PGSCHED_HEARTBEAT_TIMEOUT_SECONDS \(19\) must be at least twice/)
    expect(
      resolveConfig({
        PGSCHED_HEARTBEAT_INTERVAL_SECONDS: '10',
        PGSCHED_HEARTBEAT_TIMEOUT_SECONDS: '20',
      }).heartbeatTimeoutSeconds,
    ).toBe(20)
  })

  it('refuses a PGSCHED_JWT_SECRET shorter than 32 characters', () => {
    const err = thrown({ PGSCHED_JWT_SECRET: SECRET.slice(0, 31) })
    expect(err.code).toBe('config')
    expect(err.message).toContain('PGSCHED_JWT_SECRET')
    expect(err.message).not.toContain(SECRET.slice(0, 31))
    expect(resolveConfig({ PGSCHED_JWT_SECRET: SECRET }).jwtSecret).toBe(SECRET)
  })

  it('lets explicit overrides win over the environment and the defaults', () => {
    const config = resolveConfig(
      { PORT: '9090', PGSCHED_LOG_LEVEL: 'debug', PGSCHED_DATA_DIR: '/env' },
      { port: 1234, dataDir: '/override', databaseUrl: 'postgres://override/db' },
    )
    expect(config.port).toBe(1234)
    expect(config.dataDir).toBe('/override')
    expect(config.databaseUrl).toBe('postgres://override/db')
    expect(config.logLevel).toBe('debug')
    expect(config.workerConcurrency).toBe(WORKER_CONCURRENCY_DEFAULT)
  })

  it('returns a frozen object', () => {
    const config = resolveConfig({ PORT: '9090' })
    expect(Object.isFrozen(config)).toBe(true)
    expect(() => {
      ;(config as { port: number }).port = 1
    }).toThrow(TypeError)
    expect(config.port).toBe(9090)
    expect(Object.isFrozen(resolveConfig({}, { port: 1 }))).toBe(true)
  })

  it('does not change the environment object it is given', () => {
    const env = Object.freeze({ PORT: '9090' })
    expect(resolveConfig(env).port).toBe(9090)
    expect(env).toEqual({ PORT: '9090' })
  })
})
