/**
 * @module
 * The whole chaos stack, stood up once per run: two network namespaces (one for a worker, one for
 * a scheduler), etcd, two Patroni nodes (with WAL archiving to pgBackRest), HAProxy on loopback
 * and on the namespaces' host sides, then pgsched — `api`, schedulers `a` (host) and `b`
 * (namespace `ns-s`), workers `w1` (host) and `w2` (namespace `ns-w`).
 */
import { hostname } from 'node:os'

import postgres from 'postgres'

import type { Probes } from '../observe/types.ts'
import { startEtcd } from './etcd.ts'
import { type HaProxy, startHaProxy } from './haproxy.ts'
import { createNetns, type Netns } from './netns.ts'
import { type PatroniCluster, startPatroni } from './patroni.ts'
import { Backrest } from './pgbackrest.ts'
import { Pgsched, snapshotSource } from './pgsched.ts'
import { type Supervisor, say, until } from './supervisor.ts'

/** Everything a drill acts on. */
export interface Stack {
  sv: Supervisor
  cluster: PatroniCluster
  haproxy: HaProxy
  pgsched: Pgsched
  /** The pgsched code every process of the run runs (a snapshot). */
  root: string
  backrest: Backrest
  /** The worker's namespace (`w2` runs in it) and the scheduler's (`b` runs in it). */
  nsWorker: Netns
  nsScheduler: Netns
  probes: Probes
  /** Resolves once HAProxy routes to the Patroni primary only, and returns its name. */
  routed(timeoutMs?: number): Promise<string>
}

/** Stands the stack up; everything it starts is the supervisor's to stop. */
export async function startStack(sv: Supervisor): Promise<Stack> {
  const t0 = Date.now()
  const nsWorker = createNetns(sv, 0)
  const nsScheduler = createNetns(sv, 1)
  const etcd = await startEtcd(sv)
  say(`etcd up (${etcd.endpoint})`)
  const backrest = new Backrest(sv)
  const cluster = await startPatroni(sv, etcd.endpoint, {
    allowSubnets: [nsWorker.subnet, nsScheduler.subnet],
    parameters: backrest.archiveParameters(),
  })
  say(`patroni up: ${JSON.stringify(await cluster.waitHealthy())}`)
  const haproxy = await startHaProxy(sv, cluster.nodes, [
    '127.0.0.1',
    nsWorker.hostAddress,
    nsScheduler.hostAddress,
  ])
  const routed = async (timeoutMs = 60_000) =>
    until(
      async () => {
        const [primary, up] = await Promise.all([cluster.primary(), haproxy.up()])
        return primary && up.length === 1 && up[0] === primary ? primary : null
      },
      timeoutMs,
      async () => `HAProxy to route to the primary only (up: ${await haproxy.up()})`,
    )
  say(`haproxy up on port ${haproxy.port}, routing to ${await routed()}`)
  backrest.configure(cluster)
  await backrest.createStanza()
  say('pgbackrest stanza created')
  const root = snapshotSource(`${sv.folder}/pgsched`)
  const pgsched = new Pgsched(sv, {
    port: haproxy.port,
    superPassword: cluster.superPassword,
    root,
  })
  await pgsched.prepare()
  say('pgsched migrated through haproxy, token minted')
  await Promise.all([
    pgsched.add('api', 'api'),
    pgsched.add('w1', 'worker'),
    pgsched.add('w2', 'worker', nsWorker),
  ])
  // `a` first, so it leads at the start; `b` (in its namespace) follows.
  await pgsched.add('a', 'scheduler')
  await pgsched.add('b', 'scheduler', nsScheduler)
  const probeSql = postgres(pgsched.adminUrl(), {
    max: 1,
    connect_timeout: 1,
    idle_timeout: 2,
    onnotice: () => {},
  })
  sv.onCleanup('close the probe connection', () => probeSql.end({ timeout: 1 }))
  const probes: Probes = {
    async leader() {
      const holder = await leaderHolder(probeSql)
      return holder === null ? null : pgsched.nameOf(holder)
    },
    primary: () => cluster.primary(),
  }
  const leader = await until(() => probes.leader(), 30_000, 'a scheduler to lead')
  say(
    `pgsched up: api, schedulers a and b (b in ${nsScheduler.name}), workers w1 and w2 (w2 in ${nsWorker.name}); leader ${leader}; stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  )
  return {
    sv,
    cluster,
    haproxy,
    pgsched,
    root,
    backrest,
    nsWorker,
    nsScheduler,
    probes,
    routed,
  }
}

/**
 * The holder of the leader lock now (the recorded holder, if its lock is held), with a 1.5 s bound
 * so a probe never hangs on a dead connection.
 */
export async function leaderHolder(sql: postgres.Sql): Promise<string | null> {
  const q = sql<{ holder: string | null }[]>`
    SELECT CASE WHEN EXISTS (
      SELECT 1 FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND classid = ((('x' || left(md5(current_database() || '.pgsched.leader'), 16))::bit(64)::bigint >> 32) & 4294967295)::oid
        AND objid = (('x' || left(md5(current_database() || '.pgsched.leader'), 16))::bit(64)::bigint & 4294967295)::oid
    ) THEN (SELECT holder FROM pgsched.leader) END AS holder`
  const timer = setTimeout(() => q.cancel(), 1500)
  try {
    const [row] = await q
    return row?.holder ?? null
  } catch {
    return null
  } finally {
    clearTimeout(timer)
  }
}

/** This machine's name, as pgsched's holders and worker names start with it. */
export const HOST = hostname()
