/**
 * @module
 * Network namespaces for partitions: each has a veth pair to the host (a /30: host side `.1`,
 * inside `.2`), so a pgsched process started inside reaches HAProxy at the host side address.
 * `partition()` drops, inside the namespace, all TCP to and from the given ports of the host side
 * (packets vanish: a real partition, not a refused connection); `heal()` removes the rule.
 */
import { run, type Supervisor } from './supervisor.ts'

/** One network namespace. */
export interface Netns {
  name: string
  /** The host side address (where HAProxy listens for it). */
  hostAddress: string
  /** The address inside. */
  address: string
  /** The /30 subnet, for pg_hba. */
  subnet: string
  /** Drops traffic between the namespace and `ports` on the host side. */
  partition(ports: number[]): void
  /** Removes the partition. */
  heal(): void
  partitioned(): boolean
}

// A third octet per run, so two runs on one machine do not share subnets.
const OCTET = 100 + (process.pid % 150)

/** Creates namespace number `index` (0–63); deleted at the supervisor's cleanup. */
export function createNetns(sv: Supervisor, index: number): Netns {
  const name = `pgsched-chaos-${process.pid}-${index}`
  const host = `c13h${process.pid % 100000}${index}`.slice(0, 15)
  const inside = `c13n${process.pid % 100000}${index}`.slice(0, 15)
  const base = index * 4
  const hostAddress = `10.213.${OCTET}.${base + 1}`
  const address = `10.213.${OCTET}.${base + 2}`
  run('ip', ['netns', 'add', name])
  sv.onCleanup(`delete netns ${name}`, () => {
    run('ip', ['netns', 'delete', name], { allowFail: true })
    run('ip', ['link', 'delete', host], { allowFail: true })
  })
  run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', inside])
  run('ip', ['link', 'set', inside, 'netns', name])
  run('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', host])
  run('ip', ['link', 'set', host, 'up'])
  run('ip', ['-n', name, 'addr', 'add', `${address}/30`, 'dev', inside])
  run('ip', ['-n', name, 'link', 'set', inside, 'up'])
  run('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
  let cut = false
  return {
    name,
    hostAddress,
    address,
    subnet: `10.213.${OCTET}.${base}/30`,
    partition(ports) {
      const set = `{ ${ports.join(', ')} }`
      const rules = [
        'table inet pgsched_chaos {',
        '  chain out {',
        '    type filter hook output priority 0; policy accept;',
        `    ip daddr ${hostAddress} tcp dport ${set} drop`,
        '  }',
        '  chain in {',
        '    type filter hook input priority 0; policy accept;',
        `    ip saddr ${hostAddress} tcp sport ${set} drop`,
        '  }',
        '}',
      ].join('\n')
      run('sh', ['-c', `printf '%s\\n' "$RULES" | ip netns exec ${name} nft -f -`], {
        env: { RULES: rules },
      })
      cut = true
    },
    heal() {
      run('ip', ['netns', 'exec', name, 'nft', 'delete', 'table', 'inet', 'pgsched_chaos'], {
        allowFail: !cut,
      })
      cut = false
    },
    partitioned: () => cut,
  }
}
