/**
 * @module How each runtime starts pgsched's API and scheduler as real processes: the smoke table
 * (runtimes.test.ts) and the benchmark's runtimes workload start them the same way.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { NODE, type Service, startService } from '../processes.ts'

/** How each runtime starts the API and the scheduler, and who it leads as. */
export interface Runtime {
  name: string
  start(env: Record<string, string>): Promise<Service[]>
  /** Who it leads as: exactly, or a pattern for a name it makes up. */
  holder(services: Service[]): string | RegExp
  /** Its exit code on SIGTERM. @default 0 */
  exitOnTerm?: number
}

export const STARTUP_MS = 40_000

/**
 * `wrangler dev --local` of wrangler.jsonc on env.PORT, with `args` added and `processEnv` in its
 * environment.
 */
export function startWrangler(
  env: Record<string, string>,
  args: string[] = [],
  processEnv: Record<string, string> = {},
): Promise<Service> {
  return startService(
    NODE,
    [
      'node_modules/wrangler/bin/wrangler.js',
      'dev',
      '--local',
      '--ip',
      '127.0.0.1',
      '--port',
      env.PORT!,
      '--persist-to',
      mkdtempSync(join(tmpdir(), 'pgsched-wrangler-')),
      '--show-interactive-dev-session=false',
      // Settings reach a Worker as vars; PORT is wrangler's own.
      ...Object.entries(env).flatMap(([k, v]) => (k === 'PORT' ? [] : ['--var', `${k}:${v}`])),
      ...args,
    ],
    { WRANGLER_SEND_METRICS: 'false', CI: '1', ...processEnv },
    'Ready on',
    STARTUP_MS,
  )
}

export const RUNTIMES: Runtime[] = [
  {
    name: 'Node',
    // The CLI's api and scheduler commands (`start` would add a worker, which needs a sandbox).
    start: async (env) => [
      await startService(NODE, ['src/runtime/node.ts', 'api'], env, 'API listening', STARTUP_MS),
      await startService(
        NODE,
        ['src/runtime/node.ts', 'scheduler'],
        env,
        'scheduler started',
        STARTUP_MS,
      ),
    ],
    holder: (services) => `${hostname()}:${services[1]!.child.pid}`,
  },
  {
    name: 'Deno',
    start: async (env) => [
      await startService(
        'node_modules/.bin/deno',
        [
          'run',
          '--allow-net',
          '--allow-env',
          '--allow-read',
          '--allow-sys=hostname',
          '--node-modules-dir=manual',
          'src/runtime/deno.ts',
        ],
        { ...env, DENO_NO_UPDATE_CHECK: '1' },
        'listening',
        STARTUP_MS,
      ),
    ],
    holder: (services) => `deno:${hostname()}:${services[0]!.child.pid}`,
  },
  {
    name: 'Bun',
    start: async (env) => [
      await startService(
        'node_modules/.bin/bun',
        ['src/runtime/bun.ts'],
        env,
        'listening',
        STARTUP_MS,
      ),
    ],
    holder: (services) => `bun:${hostname()}:${services[0]!.child.pid}`,
  },
  {
    name: 'workerd',
    // The API per request; the scheduler in its Durable Object, woken by the first request.
    start: async (env) => [await startWrangler(env)],
    holder: () => /^workerd:[0-9a-f]{8}$/,
    // wrangler ends workerd and exits as killed by the signal: a Worker has no shutdown hook; its
    // sockets (the scheduler's session among them) close with the process.
    exitOnTerm: 143,
  },
]

/** wrangler.jsonc with a Hyperdrive binding added, written to a folder of its own. */
export function wranglerConfigWithHyperdrive(): string {
  const jsonc = readFileSync('wrangler.jsonc', 'utf8')
  // Whole-line comments only: the file has no other kind.
  const config = JSON.parse(jsonc.replace(/^\s*\/\/.*$/gm, ''))
  config.main = resolve(config.main)
  config.hyperdrive = [{ binding: 'HYPERDRIVE', id: '0'.repeat(32) }]
  const file = join(mkdtempSync(join(tmpdir(), 'pgsched-wrangler-config-')), 'wrangler.json')
  writeFileSync(file, JSON.stringify(config))
  return file
}
