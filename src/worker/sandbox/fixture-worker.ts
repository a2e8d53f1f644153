/**
 * @module A stand-in worker process for the sandbox tests: it prepares a sandbox in the mode and
 * scratch root given as arguments, runs each further argument as a command job (one at a time),
 * and prints one JSON line per event. Its own environment and cwd are whatever the test gives it,
 * like a real worker's (DATABASE_URL, PGSCHED_JWT_SECRET, the project folder);
 * PGSCHED_FIXTURE_LIMITS (JSON) gives each job its limits.
 */
import { JOB_LIMITS_DEFAULT } from '../../core/config.ts'
import { type JobLimits, silentLogger } from '../../core/types.ts'
import { prepareSandbox } from './index.ts'

const [mode, scratchRoot, ...commands] = process.argv.slice(2)
if (mode !== 'bwrap' && mode !== 'rlimits' && mode !== 'none') {
  throw new Error(`usage: fixture-worker.ts <bwrap|rlimits|none> <scratch root> <command>…`)
}
const sandbox = await prepareSandbox(
  { mode, ...(scratchRoot ? { scratchRoot } : {}), defaults: { ...JOB_LIMITS_DEFAULT } },
  silentLogger,
)
const limits: JobLimits = JSON.parse(process.env.PGSCHED_FIXTURE_LIMITS ?? '{}')
console.log(JSON.stringify({ ready: sandbox.describe() }))
for (const command of commands) {
  const res = await sandbox.run({ command, timeoutMs: 20_000, limits, network: false })
  console.log(JSON.stringify(res))
}
await sandbox.stop()
