/**
 * @module The pgsched API and scheduler on Bun: the portable layers, unchanged. Workers need
 * Node (Graphile Worker, child processes); run them with `npx pgsched worker`.
 *
 *   bun src/runtime/bun.ts
 */
import { resolveConfig } from '../core/config.ts'
import { createConsoleLogger, wire } from './wiring.ts'

// Bun's own API, the little used here: @types/bun would bring a second `process` and `Buffer`.
declare const Bun: {
  env: Record<string, string | undefined>
  serve(o: {
    port: number
    hostname?: string
    fetch: (r: Request) => Response | Promise<Response>
  }): { port: number; stop(closeActiveConnections?: boolean): Promise<void> }
}

const config = resolveConfig(Bun.env)
const { app, stop } = wire(config, createConsoleLogger(), 'bun')
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
