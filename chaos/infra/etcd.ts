/**
 * @module
 * One etcd (v3 API) on loopback ports: the DCS the two Patroni nodes elect their leader in.
 */
import { mkdirSync } from 'node:fs'

import { freePort } from '../../test/processes.ts'
import { type Proc, type Supervisor, until } from './supervisor.ts'

/** A running etcd. */
export interface Etcd {
  proc: Proc
  /** `host:port` of its client URL. */
  endpoint: string
}

/** Starts etcd with its data in the run folder and waits until it answers `/health`. */
export async function startEtcd(sv: Supervisor): Promise<Etcd> {
  const client = await freePort()
  const peer = await freePort()
  const dir = `${sv.folder}/etcd`
  mkdirSync(dir)
  const proc = await sv.start('etcd', '/usr/bin/etcd', [
    '--name=chaos',
    `--data-dir=${dir}`,
    `--listen-client-urls=http://127.0.0.1:${client}`,
    `--advertise-client-urls=http://127.0.0.1:${client}`,
    `--listen-peer-urls=http://127.0.0.1:${peer}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
    `--initial-cluster=chaos=http://127.0.0.1:${peer}`,
    '--initial-cluster-state=new',
    // Debian's etcd 3.4 serves the v3 API through its gRPC gateway, which Patroni's etcd3 uses.
    '--enable-v2=false',
  ])
  await until(
    async () => {
      const r = await fetch(`http://127.0.0.1:${client}/health`, {
        signal: AbortSignal.timeout(1000),
      })
      return r.ok && ((await r.json()) as { health: string }).health === 'true'
    },
    20_000,
    () => `etcd /health; log:\n${proc.log().slice(-2000)}`,
  )
  return { proc, endpoint: `127.0.0.1:${client}` }
}
