/**
 * @module The sandbox that runs command jobs (see ./sandbox/index.ts), and the constants the
 * executor and the library share with it.
 */
export {
  prepareSandbox,
  type Sandbox,
  type SandboxSettings,
  sandboxSettingsFromConfig,
} from './sandbox/index.ts'
export { KILL_GRACE_MS_DEFAULT, OUTPUT_TAIL_BYTES } from './sandbox/process.ts'
