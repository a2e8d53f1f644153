/**
 * A TCP proxy for failover tests that can cut the network without closing anything: while
 * blackholed it forwards nothing in either direction and holds back closes, as a partition
 * that silently drops packets would (or an HAProxy whose client went away). Healed, it delivers
 * what it held, as TCP retransmission would once the path is back.
 */
import { connect, createServer, type Server, type Socket } from 'node:net'

import { freePort } from './processes.ts'

/** A running proxy. */
export interface BlackholeProxy {
  /** `url` with its host and port replaced by the proxy's. */
  url: string
  /** Stops forwarding (new connections are accepted but get nowhere). */
  blackhole(): void
  /** Forwards again, held data and closes first. */
  heal(): void
  /** Resets every connection through it (both sides see the connection drop). */
  reset(): void
  /**
   * Cuts the connections open now for good, silently, while new ones go through: a server gone
   * without a word while its address moved on (a virtual IP, a DNS name).
   */
  strandExisting(): void
  /** Plays a stopped server: drops every connection and refuses new ones (stops listening). */
  down(): Promise<void>
  /** Listens again, on the same port, after down(). */
  up(): Promise<void>
  close(): Promise<void>
}

/** Starts a proxy on loopback in front of the server of `url`. */
export async function startBlackholeProxy(url: string): Promise<BlackholeProxy> {
  const target = new URL(url)
  let cut = false
  const resumes: (() => void)[] = []
  const sockets = new Set<Socket>()
  const stranded = new WeakSet<Socket>()

  // One direction of one connection: forwards `from` to `to`, or holds while cut.
  const forward = (from: Socket, to: Socket) => {
    const held: (Buffer | string | null)[] = []
    const isCut = () => cut || stranded.has(from)
    const flush = () => {
      for (const chunk of held.splice(0)) {
        if (chunk === null) to.end()
        else to.write(chunk)
      }
    }
    resumes.push(() => {
      if (!isCut()) flush()
    })
    from.on('data', (chunk) => (isCut() || held.length ? held.push(chunk) : to.write(chunk)))
    from.on('end', () => (isCut() || held.length ? held.push(null) : to.end()))
  }

  const onConnection = (client: Socket) => {
    const upstream = connect(Number(target.port), target.hostname)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      // A reset on one side is the end of the other, as for a proxy.
      s.on('error', () => {
        client.destroy()
        upstream.destroy()
      })
    }
    forward(client, upstream)
    forward(upstream, client)
  }
  const port = await freePort()
  let server: Server | undefined
  const up = () =>
    new Promise<void>((resolve) => {
      if (server?.listening) return resolve()
      server = createServer(onConnection)
      server.listen(port, '127.0.0.1', resolve)
    })
  const down = () => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((resolve) =>
      server?.listening ? server.close(() => resolve()) : resolve(),
    )
  }
  await up()
  const proxied = new URL(url)
  proxied.hostname = '127.0.0.1'
  proxied.port = String(port)
  return {
    url: proxied.toString(),
    blackhole() {
      cut = true
    },
    heal() {
      cut = false
      for (const resume of resumes) resume()
    },
    strandExisting() {
      for (const s of sockets) stranded.add(s)
    },
    reset() {
      for (const s of sockets) s.destroy()
    },
    down,
    up,
    close: down,
  }
}
