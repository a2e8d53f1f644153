/**
 * @module The sandbox that runs command jobs (see ./sandbox/index.ts), and the result types the
 * executor shares with it.
 */
export {
  prepareSandbox,
  type Sandbox,
  type SandboxRunOptions,
  type SandboxSettings,
  sandboxSettingsFromConfig,
} from './sandbox/index.ts'
export {
  type CommandResult,
  KILL_GRACE_MS_DEFAULT,
  OUTPUT_TAIL_BYTES,
  type StopOptions,
} from './sandbox/process.ts'
