/**
 * @module The pgsched API and scheduler on Bun: the portable layers, unchanged. Workers need
 * Node (Graphile Worker, child processes); run them with `npx pgsched worker`.
 *
 *   bun src/runtime/bun.ts
 */
import { hostname } from 'node:os'

import { resolveConfig } from '../core/config.ts'
import { createConsoleLogger, wire } from './wiring.ts'

const config = resolveConfig(Bun.env)
const { app, stop } = wire(config, createConsoleLogger(), `bun:${hostname()}:${process.pid}`)
const server = Bun.serve({ port: config.port, hostname: config.host, fetch: app.fetch })
console.log(`pgsched API (Bun) listening on http://localhost:${server.port}`)
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  // Bun has no signal API of its own: Node's process.on is the way.
  process.once(signal, async () => {
    await server.stop()
    await stop()
    process.exit(0)
  })
}
