/**
 * @module
 * pgsched's processes against HAProxy: the `api`, two `scheduler`s and two `worker`s, each
 * supervised and restartable, a worker or scheduler optionally inside a network namespace (where
 * it reaches HAProxy at the namespace's host side address). Short heartbeat and leader timings so
 * a drill sees a rescue or a new leader within seconds.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpSync, mkdirSync, symlinkSync } from 'node:fs'
import { hostname } from 'node:os'
import { fileURLToPath } from 'node:url'

import postgres from 'postgres'

import { freePort } from '../../test/processes.ts'
import type { Target } from '../observe/types.ts'
import { type Proc, runAsync, type Supervisor } from './supervisor.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** The pinned Node 24 (type stripping). */
const NODE = `${ROOT}node_modules/.bin/node`

/**
 * Copies pgsched's code (`src/`, `tasks/`, `package.json`) into `folder` and links
 * `node_modules`, so every process of one run — restarts included — runs the same code, however
 * the checkout changes meanwhile. By default the committed code (`git archive HEAD`); with
 * `PGSCHED_CHAOS_SOURCE=worktree`, the working tree as it is now. Returns the folder.
 */
export function snapshotSource(folder: string): string {
  mkdirSync(folder, { recursive: true })
  if (process.env.PGSCHED_CHAOS_SOURCE === 'worktree') {
    for (const p of ['src', 'tasks', 'package.json'])
      cpSync(`${ROOT}${p}`, `${folder}/${p}`, { recursive: true })
  } else {
    const tar = spawnSync('git', ['-C', ROOT, 'archive', 'HEAD', 'src', 'tasks', 'package.json'], {
      maxBuffer: 1 << 30,
    })
    if (tar.status !== 0) throw new Error(`git archive HEAD failed: ${tar.stderr}`)
    const x = spawnSync('tar', ['-x', '-C', folder], { input: tar.stdout })
    if (x.status !== 0) throw new Error(`tar -x failed: ${x.stderr}`)
  }
  symlinkSync(`${ROOT}node_modules`, `${folder}/node_modules`)
  return folder
}

/** What each role prints once it is up. */
const READY = {
  api: 'pgsched API listening',
  scheduler: 'pgsched: scheduler started',
  worker: 'pgsched: worker started',
} as const

/** A pgsched role. */
export type Role = keyof typeof READY

/** Timings given to every pgsched process (the same to all, as the README asks). */
export const PGSCHED_TIMINGS = {
  PGSCHED_HEARTBEAT_INTERVAL_SECONDS: '2',
  PGSCHED_HEARTBEAT_TIMEOUT_SECONDS: '10',
  PGSCHED_LEADER_POLL_SECONDS: '1',
  PGSCHED_SHUTDOWN_GRACE_SECONDS: '5',
  PGSCHED_KILL_GRACE_SECONDS: '2',
} as const

/** One supervised pgsched process. */
export interface PgschedProcess {
  name: string
  role: Role
  /** The network namespace it runs in, if any. */
  netns?: { name: string; hostAddress: string }
  proc?: Proc
  /** Restarts so far. */
  starts: number
}

/** Options of {@link Pgsched}. */
export interface PgschedOptions {
  /** HAProxy's port. */
  port: number
  /** Superuser password of the cluster. */
  superPassword: string
  /** Host through which HAProxy is reached from the host. @default '127.0.0.1' */
  host?: string
  /** Database name. @default 'pgsched' */
  database?: string
  /** The code to run, from {@link snapshotSource}. */
  root: string
}

/** The pgsched deployment of a chaos run. */
export class Pgsched {
  readonly jwtSecret = randomBytes(32).toString('hex')
  readonly database: string
  readonly apiPort: Promise<number>
  readonly processes = new Map<string, PgschedProcess>()
  readonly #sv: Supervisor
  readonly #o: PgschedOptions
  readonly #appPassword = randomBytes(12).toString('hex')
  #token = ''
  readonly #cli: string

  constructor(sv: Supervisor, o: PgschedOptions) {
    this.#sv = sv
    this.#o = o
    this.#cli = `${o.root}/src/runtime/node.ts`
    this.database = o.database ?? 'pgsched'
    this.apiPort = freePort()
  }

  /** Superuser URL through HAProxy at `host` (the host side of a namespace, or loopback). */
  adminUrl(host = this.#o.host ?? '127.0.0.1', database = this.database): string {
    return `postgres://postgres:${this.#o.superPassword}@${host}:${this.#o.port}/${database}`
  }

  /** What the workload and the checks connect to. */
  async target(): Promise<Target> {
    return {
      apiUrl: `http://127.0.0.1:${await this.apiPort}`,
      token: this.#token,
      databaseUrl: `postgres://chaos_app:${this.#appPassword}@127.0.0.1:${this.#o.port}/${this.database}`,
      adminUrl: this.adminUrl(),
    }
  }

  /** Environment of every pgsched process and CLI run. */
  env(host?: string): Record<string, string | undefined> {
    return {
      DATABASE_URL: this.adminUrl(host),
      PGSCHED_JWT_SECRET: this.jwtSecret,
      PGSCHED_LOG_LEVEL: 'info',
      PGSCHED_WORKER_CONCURRENCY: '8',
      PGSCHED_RATE_LIMIT_PER_MINUTE: '100000',
      OTEL_SDK_DISABLED: 'true',
      PGSCHED_DATA_DIR: undefined,
      PORT: undefined,
      ...PGSCHED_TIMINGS,
    }
  }

  /**
   * Creates the database (if missing), applies the migrations through HAProxy, creates the SQL
   * submitter role and mints an admin token.
   */
  async prepare(): Promise<void> {
    const sql = postgres(this.adminUrl(undefined, 'postgres'), { max: 1, onnotice: () => {} })
    try {
      const [exists] = await sql`SELECT 1 FROM pg_database WHERE datname = ${this.database}`
      if (!exists) await sql`CREATE DATABASE ${sql(this.database)}`
    } finally {
      await sql.end()
    }
    await runAsync(NODE, [this.#cli, 'migrate'], {
      env: clean(this.env()),
      cwd: this.#o.root,
      timeoutMs: 120_000,
    })
    const db = postgres(this.adminUrl(), { max: 1, onnotice: () => {} })
    try {
      const [role] = await db`SELECT 1 FROM pg_roles WHERE rolname = 'chaos_app'`
      if (!role) {
        await db.unsafe(
          // A literal password in DDL cannot be a bind parameter; it is our own random hex.
          `CREATE ROLE chaos_app LOGIN PASSWORD '${this.#appPassword}' IN ROLE pgsched_submitter`,
        )
      } else {
        await db.unsafe(`ALTER ROLE chaos_app PASSWORD '${this.#appPassword}'`)
      }
    } finally {
      await db.end()
    }
    const { out } = await runAsync(
      NODE,
      [this.#cli, 'token', '--sub', 'chaos', '--role', 'admin'],
      {
        env: clean(this.env()),
        cwd: this.#o.root,
      },
    )
    const token = out.split('\n').find((l) => /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/.test(l.trim()))
    if (!token) throw new Error(`pgsched token printed no token:\n${out}`)
    this.#token = token.trim()
  }

  /** Declares process `name` of `role` (in `netns`, if given) and starts it. */
  async add(
    name: string,
    role: Role,
    netns?: { name: string; hostAddress: string },
  ): Promise<PgschedProcess> {
    const p: PgschedProcess = { name, role, netns, starts: 0 }
    this.processes.set(name, p)
    await this.start(name)
    return p
  }

  /** Starts process `name` again (after a kill or a stop). */
  async start(name: string): Promise<Proc> {
    const p = this.get(name)
    if (p.proc?.running()) throw new Error(`${name} is running already (pid ${p.proc.pid})`)
    const env: Record<string, string | undefined> = { ...this.env(p.netns?.hostAddress) }
    if (p.role === 'api') {
      env.PORT = String(await this.apiPort)
      env.PGSCHED_HOST = '127.0.0.1'
    } else {
      // Inside a namespace 127.0.0.1 is the namespace's own loopback.
      env.PGSCHED_METRICS_PORT = String(await freePort())
    }
    p.proc = await this.#sv.start(`pgsched-${name}`, NODE, [this.#cli, p.role], {
      env,
      cwd: this.#o.root,
      netns: p.netns?.name,
      ready: READY[p.role],
      readyTimeoutMs: 60_000,
    })
    p.starts++
    return p.proc
  }

  /** Stops process `name` (SIGTERM, its graceful shutdown). */
  async stop(name: string): Promise<void> {
    const p = this.get(name)
    if (p.proc) await this.#sv.stop(p.proc, 20_000)
  }

  /** SIGKILLs process `name`; resolves once it is gone. */
  async kill(name: string): Promise<void> {
    const p = this.get(name)
    if (!p.proc?.running()) return
    this.#sv.kill(p.proc.pid, 'SIGKILL')
    await p.proc.exited
  }

  /** A declared process. */
  get(name: string): PgschedProcess {
    const p = this.processes.get(name)
    if (!p) throw new Error(`no pgsched process ${name}`)
    return p
  }

  /** The `holder` a scheduler process records (`hostname:pid`). */
  holderOf(name: string): string | null {
    const pid = this.processes.get(name)?.proc?.pid
    return pid === undefined ? null : `${hostname()}:${pid}`
  }

  /** The process name of a `holder`, or the holder itself when it is none of ours. */
  nameOf(holder: string): string {
    for (const p of this.processes.values()) if (this.holderOf(p.name) === holder) return p.name
    return holder
  }

  /** The worker name (`pgsched.workers.name`) prefix of process `name`: host and pid. */
  workerPid(name: string): number | null {
    return this.processes.get(name)?.proc?.pid ?? null
  }
}

function clean(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries({ ...process.env, ...env })) {
    if (v !== undefined) out[k] = v
  }
  return out
}
