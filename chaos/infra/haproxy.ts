/**
 * @module
 * HAProxy in front of the two Patroni nodes: TCP on one port, routed to whichever node's Patroni
 * REST answers 200 on `/primary`; connections to a node marked down are cut
 * (`on-marked-down shutdown-sessions`), so clients reconnect to the new primary at once.
 */
import { writeFileSync } from 'node:fs'
import { connect } from 'node:net'

import { freePort } from '../../test/processes.ts'
import type { PatroniNode } from './patroni.ts'
import { type Proc, type Supervisor, until } from './supervisor.ts'

/** The running HAProxy. */
export interface HaProxy {
  proc: Proc
  port: number
  /** Every address it listens on (loopback and the network namespaces' host sides). */
  addresses: string[]
  /** The servers HAProxy routes to now (state UP), by name. */
  up(): Promise<string[]>
}

/** Starts HAProxy on `addresses` (127.0.0.1 first) and one free port. */
export async function startHaProxy(
  sv: Supervisor,
  nodes: PatroniNode[],
  addresses: string[],
): Promise<HaProxy> {
  const port = await freePort()
  const config = `${sv.folder}/haproxy.cfg`
  const socket = `${sv.folder}/haproxy.sock`
  writeFileSync(
    config,
    [
      'global',
      '  maxconn 500',
      `  stats socket ${socket} mode 600 level admin`,
      'defaults',
      '  mode tcp',
      '  timeout connect 2s',
      '  timeout client 30m',
      '  timeout server 30m',
      '  timeout check 1s',
      // A client that vanished (partitioned) is noticed in ~11 s and its server connection closed,
      // so its Postgres session ends and releases what it held (the leader's advisory lock).
      // Without it the session lives until timeout client, holding the lock for 30 minutes.
      '  option clitcpka',
      '  clitcpka-idle 5s',
      '  clitcpka-intvl 2s',
      '  clitcpka-cnt 3',
      'listen postgres',
      ...addresses.map((a) => `  bind ${a}:${port}`),
      '  option httpchk GET /primary',
      '  http-check expect status 200',
      '  default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions',
      ...nodes.map(
        (n) => `  server ${n.name} 127.0.0.1:${n.pgPort} maxconn 200 check port ${n.restPort}`,
      ),
      '',
    ].join('\n'),
  )
  const proc = await sv.start('haproxy', '/usr/sbin/haproxy', ['-db', '-f', config])
  await until(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect(port, '127.0.0.1', () => {
          s.destroy()
          resolve(true)
        })
        s.once('error', () => resolve(false))
      }),
    10_000,
    () => `haproxy to listen on ${port}; log:\n${proc.log()}`,
  )
  const up = async () =>
    (await stats(socket))
      .filter((r) => r.pxname === 'postgres' && r.svname !== 'FRONTEND' && r.svname !== 'BACKEND')
      .filter((r) => r.status === 'UP')
      .map((r) => r.svname!)
  return { proc, port, addresses, up }
}

/** `show stat` over the admin socket, as rows keyed by column name. */
function stats(socket: string): Promise<Record<string, string>[]> {
  return new Promise((resolve, reject) => {
    const s = connect(socket)
    let out = ''
    s.on('data', (d) => (out += d))
    s.once('error', reject)
    s.once('end', () => {
      const [head, ...lines] = out.trim().split('\n')
      const cols = (head ?? '').replace(/^# /, '').split(',')
      resolve(lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v]))))
    })
    s.write('show stat\n')
  })
}
