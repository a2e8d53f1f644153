/**
 * @module The pgsched API and scheduler on Deno: the portable layers, unchanged. Workers need
 * Node (Graphile Worker, child processes); run them with `npx pgsched worker`.
 *
 *   deno run --allow-net --allow-env --allow-read --allow-sys=hostname --node-modules-dir=manual src/runtime/deno.ts
 */
import { resolveConfig } from '../core/config.ts'
import { createConsoleLogger, wire } from './wiring.ts'

declare const Deno: {
  env: { toObject(): Record<string, string> }
  serve(
    o: { port: number; hostname?: string; onListen?: (a: { port: number }) => void },
    h: (r: Request) => Response | Promise<Response>,
  ): {
    shutdown(): Promise<void>
  }
  addSignalListener(signal: 'SIGTERM' | 'SIGINT', fn: () => void): void
  exit(code: number): never
  hostname(): string
  pid: number
}

const config = resolveConfig(Deno.env.toObject())
const { app, stop } = wire(config, createConsoleLogger(), `deno:${Deno.hostname()}:${Deno.pid}`)
const server = Deno.serve(
  {
    port: config.port,
    hostname: config.host,
    onListen: ({ port }) => console.log(`pgsched API (Deno) listening on http://localhost:${port}`),
  },
  app.fetch,
)
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  Deno.addSignalListener(signal, async () => {
    await server.shutdown()
    await stop()
    Deno.exit(0)
  })
}
