/**
 * @module Group commit: calls that arrive while earlier ones are being written share one
 * transaction (one commit, one WAL flush), and each caller is answered only after that
 * transaction has committed. At low load a call is written alone, at once. When a shared
 * transaction fails, its calls are tried again in smaller groups, so every caller gets its own
 * answer. A group is written by one `WriteGroup`: a single set-based statement where one exists
 * (its own transaction, one round trip), or `eachInTransaction` of a per-call write.
 */
import type { Sql, SqlPool } from './client.ts'

/** Options of a GroupCommit. */
export interface GroupCommitOptions<I> {
  /** Most calls in one transaction. @default 100 */
  maxBatch?: number
  /** Transactions in flight at once; more calls wait and form the next groups. @default 4 */
  maxInFlight?: number
  /**
   * Calls with the same key never share a transaction (e.g. one idempotency key, whose second
   * call must see the first committed).
   */
  keyOf?: (item: I) => string | undefined
}

/** Writes a whole group atomically; returns one answer per item, in order. */
export type WriteGroup<I, O> = (sql: SqlPool, items: I[]) => Promise<O[]>

/**
 * A WriteGroup that writes each item with `write` in one shared transaction, with optional
 * statements before and after the items.
 */
export function eachInTransaction<I, O>(
  write: (tx: Sql, item: I) => Promise<O>,
  around: { before?: (tx: Sql) => Promise<unknown>; after?: (tx: Sql) => Promise<unknown> } = {},
): WriteGroup<I, O> {
  return async (sql, items) =>
    // postgres.js types begin()'s result by unwrapping promises; the callback returns O[].
    (await sql.begin(async (tx) => {
      // Awaited first: postgres.js sends a query when it is awaited, and the items' queries
      // would otherwise go out ahead of it.
      await around.before?.(tx)
      const all = await Promise.all(items.map((item) => write(tx, item)))
      await around.after?.(tx)
      return all
    })) as O[]
}

// The next turn of the event loop, after I/O callbacks already due. Deno has no global
// setImmediate; there, setTimeout(0) does the same at the cost of a millisecond.
const nextTurn: (f: () => void) => void =
  (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ??
  ((f) => setTimeout(f, 0))

interface Pending<I, O> {
  item: I
  resolve(o: O): void
  reject(e: unknown): void
}

/** Writes items with `write`, grouping concurrent ones into shared transactions. */
export class GroupCommit<I, O> {
  readonly #sql: SqlPool
  readonly #write: WriteGroup<I, O>
  readonly #maxBatch: number
  readonly #maxInFlight: number
  readonly #keyOf: (item: I) => string | undefined
  #queue: Pending<I, O>[] = []
  #inFlight = 0
  #pumpScheduled = false

  constructor(sql: SqlPool, write: WriteGroup<I, O>, o: GroupCommitOptions<I> = {}) {
    this.#sql = sql
    this.#write = write
    this.#maxBatch = o.maxBatch ?? 100
    this.#maxInFlight = o.maxInFlight ?? 4
    this.#keyOf = o.keyOf ?? (() => undefined)
  }

  /** Writes `item`; resolves once the transaction that wrote it has committed. */
  run(item: I): Promise<O> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject })
      // Calls made in the same turn of the event loop (a batch of claimed runs starting, a burst
      // of requests parsed) form one group rather than a group of the first and one of the rest.
      if (this.#pumpScheduled) return
      this.#pumpScheduled = true
      nextTurn(() => {
        this.#pumpScheduled = false
        this.#pump()
      })
    })
  }

  #pump(): void {
    while (this.#inFlight < this.#maxInFlight && this.#queue.length > 0) {
      const group = this.#take()
      this.#inFlight++
      void this.#commit(group).finally(() => {
        this.#inFlight--
        this.#pump()
      })
    }
  }

  #take(): Pending<I, O>[] {
    const group: Pending<I, O>[] = []
    const rest: Pending<I, O>[] = []
    const keys = new Set<string>()
    for (const p of this.#queue) {
      const k = this.#keyOf(p.item)
      if (group.length >= this.#maxBatch || (k !== undefined && keys.has(k))) {
        rest.push(p)
        continue
      }
      if (k !== undefined) keys.add(k)
      group.push(p)
    }
    this.#queue = rest
    return group
  }

  // A group whose transaction fails is split in halves, each tried again: a bad call ends up
  // alone with its own error in log2(n) rounds, while the others still commit together.
  async #commit(group: Pending<I, O>[]): Promise<void> {
    try {
      const all = await this.#write(
        this.#sql,
        group.map((p) => p.item),
      )
      for (const [i, p] of group.entries()) p.resolve(all[i] as O)
    } catch (e) {
      if (group.length === 1) {
        group[0]!.reject(e)
        return
      }
      const half = Math.ceil(group.length / 2)
      await Promise.all([this.#commit(group.slice(0, half)), this.#commit(group.slice(half))])
    }
  }
}
