/** @module A leader service that runs one pass every interval until stopped. */
import { sleep } from '../core/sleep.ts'

/** Options of a Periodic service. */
interface PeriodicOptions {
  /** Time between the end of one pass and the start of the next. */
  intervalMs: number
  /** One pass of the service. */
  pass: () => Promise<void>
  /** Called with the error of a pass the loop ran (not of runOnce, whose caller gets it). */
  onError: (e: unknown) => void
  /** Called after every pass, the loop's or runOnce's, with its error if it failed. */
  onPass?: (error?: unknown) => void
}

/** Runs `pass` every `intervalMs` (first after one interval); errors go to `onError`. */
export class Periodic {
  readonly #o: PeriodicOptions
  #abort: AbortController | undefined
  #loop: Promise<void> | undefined
  // The pass in progress: passes never overlap, whether the loop or runOnce started them.
  #current: Promise<void> = Promise.resolve()

  constructor(options: PeriodicOptions) {
    this.#o = options
  }

  /** Starts; idempotent. */
  async start(): Promise<void> {
    if (this.#abort) return
    const abort = new AbortController()
    this.#abort = abort
    this.#loop = (async () => {
      while (!abort.signal.aborted) {
        await sleep(this.#o.intervalMs, abort.signal)
        if (abort.signal.aborted) break
        try {
          await this.#run()
        } catch (e) {
          if (!abort.signal.aborted) this.#o.onError(e)
        }
      }
    })()
  }

  /** Stops and waits for the pass in progress; idempotent. */
  async stop(): Promise<void> {
    this.#abort?.abort()
    this.#abort = undefined
    await this.#loop
  }

  /**
   * Runs one pass now, after the one in progress if any, whether or not the service is started;
   * rejects with the pass's error.
   */
  runOnce(): Promise<void> {
    return this.#run()
  }

  #run(): Promise<void> {
    const run = this.#current.then(async () => {
      try {
        await this.#o.pass()
      } catch (e) {
        this.#o.onPass?.(e)
        throw e
      }
      this.#o.onPass?.()
    })
    this.#current = run.catch(() => {})
    return run
  }
}
