/**
 * @module
 * pgBackRest for the chaos cluster: a repository under /tmp, WAL archived by whichever node is
 * primary (`archive_command` in Patroni's cluster parameters, `archive_mode: on`), full backups
 * from the primary, and a point-in-time restore into a fresh data folder started as a standalone
 * PostgreSQL 15 (not Patroni) on a free port. Every pgBackRest command runs as `postgres`.
 */
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'

import { freePort } from '../../test/processes.ts'
import { type PatroniCluster, PG_BIN, postgresIds } from './patroni.ts'
import { type Proc, runAsync, type Supervisor, until } from './supervisor.ts'

/** The stanza name. */
export const STANZA = 'chaos'

/** A restored, standalone PostgreSQL. */
export interface Restored {
  proc: Proc
  port: number
  dataDir: string
  /** Superuser URL of `database` on it. */
  url(database: string): string
}

/** The pgBackRest repository and configuration of one chaos run. */
export class Backrest {
  readonly repo: string
  readonly config: string
  readonly #sv: Supervisor
  #cluster: PatroniCluster | undefined

  constructor(sv: Supervisor) {
    this.#sv = sv
    const { uid, gid } = postgresIds()
    this.repo = mkdtempSync('/tmp/pgsched-chaos-backrest-')
    chmodSync(this.repo, 0o700)
    chownSync(this.repo, uid, gid)
    sv.onCleanup(`remove ${this.repo}`, () => rmSync(this.repo, { recursive: true, force: true }))
    this.config = `${sv.folder}/pgbackrest.conf`
    writeFileSync(
      this.config,
      [
        '[global]',
        `repo1-path=${this.repo}`,
        'repo1-retention-full=2',
        `log-path=${this.repo}`,
        `lock-path=${this.repo}`,
        'log-level-console=info',
        'log-level-file=detail',
        // Small, local: spend no CPU on compression.
        'compress-type=none',
        'start-fast=y',
        'archive-timeout=30',
        `[${STANZA}]`,
        '',
      ].join('\n'),
      { mode: 0o644 },
    )
  }

  /**
   * Patroni parameters that archive every WAL segment of the primary. The archiver runs in the
   * data folder, so `$PWD` names the pushing node's data folder, whichever node it is.
   */
  archiveParameters(): Record<string, string> {
    return {
      archive_mode: 'on',
      archive_command: `pgbackrest --config=${this.config} --stanza=${STANZA} --pg1-path="$PWD" archive-push "$PWD/%p"`,
      archive_timeout: '10s',
    }
  }

  /** Remembers the cluster, whose primary each command targets. */
  configure(cluster: PatroniCluster): void {
    this.#cluster = cluster
  }

  async #primaryOptions(): Promise<string[]> {
    const cluster = this.#cluster
    if (!cluster) throw new Error('pgbackrest: configure(cluster) first')
    const name = await until(() => cluster.primary(), 30_000, 'a primary')
    const n = cluster.node(name)
    return [`--pg1-path=${n.dataDir}`, `--pg1-port=${n.pgPort}`, `--pg1-socket-path=${n.home}`]
  }

  /** `pgbackrest <command>` against the primary, as postgres; resolves to its output. */
  async command(command: string, extra: string[] = [], timeoutMs = 300_000): Promise<string> {
    const { out } = await runAsync(
      'pgbackrest',
      [
        `--config=${this.config}`,
        `--stanza=${STANZA}`,
        ...(await this.#primaryOptions()),
        ...extra,
        command,
      ],
      { asPostgres: true, timeoutMs },
    )
    return out
  }

  /** Creates the stanza and checks that archiving works. */
  async createStanza(): Promise<void> {
    await this.command('stanza-create')
    await this.command('check')
  }

  /** A full backup of the primary. */
  async backup(): Promise<string> {
    return this.command('backup', ['--type=full'])
  }

  /** Switches WAL on the primary and waits until the segment is archived (`pgbackrest check`). */
  async flushArchive(): Promise<void> {
    await this.command('check')
  }

  /**
   * Restores the latest backup, replayed up to `target` (a time) and promoted, into a fresh data
   * folder under /tmp, and starts it as a standalone PostgreSQL 15 on a free port.
   */
  async restore(target: Date): Promise<Restored> {
    const { uid, gid } = postgresIds()
    const home = mkdtempSync('/tmp/pgsched-chaos-restored-')
    chmodSync(home, 0o700)
    chownSync(home, uid, gid)
    this.#sv.onCleanup(`remove ${home}`, () => rmSync(home, { recursive: true, force: true }))
    const dataDir = `${home}/data`
    await runAsync(
      'pgbackrest',
      [
        `--config=${this.config}`,
        `--stanza=${STANZA}`,
        `--pg1-path=${dataDir}`,
        '--type=time',
        `--target=${target.toISOString().replace('T', ' ').replace('Z', '+00')}`,
        '--target-action=promote',
        'restore',
      ],
      { asPostgres: true, timeoutMs: 300_000 },
    )
    const port = await freePort()
    // Patroni's postgresql.conf came with the backup: override what named the old cluster.
    const proc = await this.#sv.start(
      'postgres-restored',
      `${PG_BIN}/postgres`,
      [
        '-D',
        dataDir,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${home}`,
        '-c',
        'archive_mode=off',
        '-c',
        'synchronous_standby_names=',
        '-c',
        `hba_file=${dataDir}/pg_hba.conf`,
        '-c',
        `ident_file=${dataDir}/pg_ident.conf`,
        '-c',
        `config_file=${dataDir}/postgresql.conf`,
      ],
      {
        asPostgres: true,
        cwd: home,
        ready: 'database system is ready to accept connections',
        readyTimeoutMs: 120_000,
      },
    )
    const cluster = this.#cluster!
    return {
      proc,
      port,
      dataDir,
      url: (database) =>
        `postgres://${cluster.superuser}:${cluster.superPassword}@127.0.0.1:${port}/${database}`,
    }
  }
}

/** Whether the pgbackrest binary is installed. */
export const HAVE_PGBACKREST = existsSync('/usr/bin/pgbackrest')
