/**
 * @module
 * Two Patroni-managed PostgreSQL 15 nodes (`pg1`, `pg2`) in `synchronous_mode_strict`, with short
 * timings so a failover takes seconds: `ttl` 10, `loop_wait` 1, `retry_timeout` 4, and
 * `primary_start_timeout` 0 (a crashed primary fails over at once instead of being restarted in
 * place for five minutes). Patroni and Postgres run as the `postgres` user, their folders directly
 * under /tmp.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { userInfo } from 'node:os'

import { freePort } from '../../test/processes.ts'
import { alive, type Proc, runAsync, type Supervisor, sleep, until } from './supervisor.ts'

/** The PostgreSQL 15 binaries. */
export const PG_BIN = '/usr/lib/postgresql/15/bin'

/** One node's ports and folders. */
export interface PatroniNode {
  name: string
  pgPort: number
  restPort: number
  /** Postgres-owned folder holding `data/`, the socket and the pgpass file. */
  home: string
  dataDir: string
  config: string
  proc?: Proc
}

/** What Patroni's REST `/cluster` says about one member. */
export interface Member {
  name: string
  role: string
  state: string
  timeline?: number
  lag?: number | string
}

/** Options of {@link startPatroni}. */
export interface PatroniOptions {
  /** Extra `postgresql.parameters` of the cluster (e.g. `archive_command`). */
  parameters?: Record<string, string | number | boolean>
  /** Subnets allowed to connect besides loopback (the network namespaces'). */
  allowSubnets?: string[]
}

/** The running Patroni cluster. */
export class PatroniCluster {
  readonly scope: string
  readonly nodes: PatroniNode[]
  readonly superuser = 'postgres'
  readonly superPassword: string
  readonly #sv: Supervisor
  readonly #etcd: string
  readonly #o: PatroniOptions

  constructor(sv: Supervisor, etcd: string, nodes: PatroniNode[], o: PatroniOptions) {
    this.#sv = sv
    this.#etcd = etcd
    this.nodes = nodes
    this.#o = o
    this.scope = `chaos-${process.pid}`
    this.superPassword = randomBytes(12).toString('hex')
  }

  /** A node by name. */
  node(name: string): PatroniNode {
    const n = this.nodes.find((x) => x.name === name)
    if (!n) throw new Error(`no Patroni node ${name}`)
    return n
  }

  /** Writes each node's configuration and starts it; resolves once both run. */
  async start(): Promise<void> {
    const replPassword = randomBytes(12).toString('hex')
    const parameters = {
      wal_level: 'replica',
      hot_standby: 'on',
      max_connections: 200,
      max_wal_senders: 10,
      max_replication_slots: 10,
      wal_log_hints: 'on',
      wal_keep_size: '256MB',
      // pgsched's clients see a dead TCP peer within seconds, not two hours.
      tcp_keepalives_idle: 5,
      tcp_keepalives_interval: 2,
      tcp_keepalives_count: 3,
      ...this.#o.parameters,
    }
    const hba = [
      'local all all trust',
      'host replication replicator 127.0.0.1/32 scram-sha-256',
      'host all all 127.0.0.1/32 scram-sha-256',
      ...(this.#o.allowSubnets ?? []).map((s) => `host all all ${s} scram-sha-256`),
    ]
    for (const n of this.nodes) {
      const config = {
        scope: this.scope,
        namespace: '/chaos/',
        name: n.name,
        log: { level: 'INFO' },
        restapi: {
          listen: `127.0.0.1:${n.restPort}`,
          connect_address: `127.0.0.1:${n.restPort}`,
        },
        etcd3: { hosts: this.#etcd },
        bootstrap: {
          dcs: {
            ttl: 10,
            loop_wait: 1,
            retry_timeout: 4,
            maximum_lag_on_failover: 1048576,
            primary_start_timeout: 0,
            master_start_timeout: 0,
            synchronous_mode: true,
            synchronous_mode_strict: true,
            synchronous_node_count: 1,
            postgresql: {
              use_pg_rewind: true,
              remove_data_directory_on_rewind_failure: true,
              remove_data_directory_on_diverged_timelines: true,
              use_slots: true,
              parameters,
            },
          },
          initdb: [{ encoding: 'UTF8' }, 'data-checksums', { 'auth-local': 'trust' }],
        },
        postgresql: {
          listen: `127.0.0.1:${n.pgPort}`,
          connect_address: `127.0.0.1:${n.pgPort}`,
          data_dir: n.dataDir,
          bin_dir: PG_BIN,
          pgpass: `${n.home}/pgpass`,
          authentication: {
            superuser: { username: this.superuser, password: this.superPassword },
            replication: { username: 'replicator', password: replPassword },
            rewind: { username: this.superuser, password: this.superPassword },
          },
          parameters: { unix_socket_directories: n.home },
          pg_hba: hba,
        },
      }
      // JSON is YAML: Patroni reads it as is.
      writeFileSync(n.config, JSON.stringify(config, null, 2), { mode: 0o644 })
    }
    for (const n of this.nodes) await this.startNode(n.name)
  }

  /** Starts (or restarts, after {@link stopNode}) the Patroni of node `name`. */
  async startNode(name: string): Promise<void> {
    const n = this.node(name)
    n.proc = await this.#sv.start(`patroni-${n.name}`, '/usr/bin/patroni', [n.config], {
      asPostgres: true,
      ready: /starting as|no action|bootstrap|Lock owner/,
      readyTimeoutMs: 60_000,
    })
  }

  /** Stops node `name`'s Patroni (which stops its Postgres). */
  async stopNode(name: string): Promise<void> {
    const n = this.node(name)
    if (n.proc) await this.#sv.stop(n.proc, 30_000)
  }

  /** Patroni's `/cluster` answer from any node that answers; null when none does. */
  async cluster(): Promise<Member[] | null> {
    for (const n of this.nodes) {
      try {
        const r = await fetch(`http://127.0.0.1:${n.restPort}/cluster`, {
          signal: AbortSignal.timeout(1000),
        })
        if (r.ok) return ((await r.json()) as { members: Member[] }).members
      } catch {
        // The next node may answer.
      }
    }
    return null
  }

  /** The name of the node whose REST `/primary` answers 200, or null. */
  async primary(): Promise<string | null> {
    for (const n of this.nodes) {
      try {
        const r = await fetch(`http://127.0.0.1:${n.restPort}/primary`, {
          signal: AbortSignal.timeout(1000),
        })
        await r.arrayBuffer()
        if (r.status === 200) return n.name
      } catch {
        // Down: not primary.
      }
    }
    return null
  }

  /** Waits until a leader runs and the other node is its streaming sync standby. */
  async waitHealthy(timeoutMs = 90_000): Promise<{ leader: string; sync: string }> {
    return until(
      async () => {
        const members = await this.cluster()
        const leader = members?.find((m) => m.role === 'leader' && m.state === 'running')
        const sync = members?.find(
          (m) => m.role === 'sync_standby' && (m.state === 'streaming' || m.state === 'running'),
        )
        return leader && sync && (await this.primary()) === leader.name
          ? { leader: leader.name, sync: sync.name }
          : null
      },
      timeoutMs,
      async () =>
        `a Patroni leader and sync standby; cluster: ${JSON.stringify(await this.cluster())}`,
    )
  }

  /** The PID of node `name`'s postmaster (first line of postmaster.pid), or null. */
  postmasterPid(name: string): number | null {
    try {
      const pid = Number(
        readFileSync(`${this.node(name).dataDir}/postmaster.pid`, 'utf8').split('\n')[0],
      )
      return pid > 0 && alive(pid) ? pid : null
    } catch {
      return null
    }
  }

  /** SIGKILLs the primary's postmaster; returns the node killed. */
  async killPrimary(): Promise<string> {
    const name = await until(() => this.primary(), 10_000, 'a primary')
    const pid = this.postmasterPid(name)
    if (!pid) throw new Error(`no postmaster.pid for primary ${name}`)
    this.#sv.kill(pid, 'SIGKILL')
    return name
  }

  /** `patronictl switchover` from the current leader to the other node; returns [from, to]. */
  async switchover(): Promise<[string, string]> {
    const { leader, sync } = await this.waitHealthy(30_000)
    await this.#patronictl([
      'switchover',
      this.scope,
      '--leader',
      leader,
      '--candidate',
      sync,
      '--force',
    ])
    return [leader, sync]
  }

  /** `patronictl restart --force` of the primary's Postgres (a fast shutdown and start). */
  async restartPrimary(): Promise<string> {
    const name = await until(() => this.primary(), 10_000, 'a primary')
    await this.#patronictl(['restart', this.scope, name, '--force'])
    return name
  }

  async #patronictl(args: string[]): Promise<string> {
    const { out } = await runAsync('/usr/bin/patronictl', ['-c', this.nodes[0]!.config, ...args], {
      asPostgres: true,
      timeoutMs: 90_000,
    })
    return out
  }

  /** Superuser URL of node `name` directly (not through HAProxy). */
  directUrl(name: string, database = 'postgres'): string {
    return `postgres://${this.superuser}:${this.superPassword}@127.0.0.1:${this.node(name).pgPort}/${database}`
  }
}

/**
 * Starts two Patroni nodes against etcd at `etcd` and waits for a leader with a sync standby.
 * Their folders are deleted at the supervisor's cleanup.
 */
export async function startPatroni(
  sv: Supervisor,
  etcd: string,
  o: PatroniOptions = {},
): Promise<PatroniCluster> {
  const pg = userInfo({ encoding: 'utf8' }).uid === 0 ? postgresIds() : null
  const nodes: PatroniNode[] = []
  for (const name of ['pg1', 'pg2']) {
    const home = mkdtempSync(`/tmp/pgsched-chaos-${name}-`)
    chmodSync(home, 0o700)
    if (pg) chownSync(home, pg.uid, pg.gid)
    sv.onCleanup(`remove ${home}`, () => rmSync(home, { recursive: true, force: true }))
    nodes.push({
      name,
      pgPort: await freePort(),
      restPort: await freePort(),
      home,
      dataDir: `${home}/data`,
      config: `${sv.folder}/patroni-${name}.yml`,
    })
  }
  // The run folder holds the configurations, which postgres must read.
  chmodSync(sv.folder, 0o711)
  const cluster = new PatroniCluster(sv, etcd, nodes, o)
  // Stop Patroni first, then make sure no postmaster it started outlives it.
  sv.onCleanup('kill leftover postmasters', async () => {
    for (const n of nodes) {
      const pid = cluster.postmasterPid(n.name)
      if (pid) {
        sv.kill(pid, 'SIGQUIT')
        await sleep(500)
        if (alive(pid)) sv.kill(pid, 'SIGKILL')
      }
    }
  })
  await cluster.start()
  await cluster.waitHealthy()
  return cluster
}

/** The uid and gid of the `postgres` user. */
export function postgresIds(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))
  if (!line) throw new Error('no postgres user on this machine')
  const [, , uid, gid] = line.split(':')
  return { uid: Number(uid), gid: Number(gid) }
}
