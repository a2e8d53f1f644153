/** @module A leader service that runs one pass every interval until stopped. */
import { sleep } from '../core/sleep.ts'

/** Runs `pass` every `intervalMs` (first after one interval); errors go to `onError`. */
export class Periodic {
  readonly #intervalMs: number
  readonly #pass: () => Promise<void>
  readonly #onError: (e: unknown) => void
  #abort: AbortController | undefined
  #loop: Promise<void> | undefined

  constructor(intervalMs: number, pass: () => Promise<void>, onError: (e: unknown) => void) {
    this.#intervalMs = intervalMs
    this.#pass = pass
    this.#onError = onError
  }

  /** Starts; idempotent. */
  async start(): Promise<void> {
    if (this.#abort) return
    const abort = new AbortController()
    this.#abort = abort
    this.#loop = (async () => {
      while (!abort.signal.aborted) {
        await sleep(this.#intervalMs, abort.signal)
        if (abort.signal.aborted) break
        try {
          await this.#pass()
        } catch (e) {
          if (!abort.signal.aborted) this.#onError(e)
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
}
