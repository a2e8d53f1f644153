/**
 * @module Group commit: calls that arrive while earlier ones are being written share one
 * transaction (one commit, one WAL flush), and each caller is answered only after that
 * transaction has committed (and, with a synchronous replica, replicated: db/commit.ts; a commit
 * left uncertain rejects every call of its group with a CommitUncertainError and is never tried
 * again). At low load a call is written alone, at once. When a shared
 * transaction fails, its calls are tried again in smaller groups, so every caller gets its own
 * answer. A group is written by one `WriteGroup`: a single set-based statement where one exists
 * (its own transaction, one round trip), or `eachInTransaction` of a per-call write.
 *
 * One call must never hold up the others. postgres.js builds a statement (serializes its
 * parameters) only as it sends it, and when that throws for a statement pipelined behind another
 * on the same connection, it rejects the other statement and leaves the one that threw queued but
 * never sent (porsager/postgres#1082): the connection then waits for an answer that never comes,
 * or gives answers to the wrong statements. In a group's transaction that was a write that never
 * settled, a slot never given back and a connection reserved for good; a JSON payload nested
 * 6,000 deep (JSON.stringify ran out of stack) thus stopped every REST submission once the four
 * slots were taken. So `check` refuses such an item before it joins a group; a transaction that
 * fails with an error that is not the server's ends its connection (eachInTransaction) and is split
 * until the bad call is alone; and a write not settled within `settleTimeoutMs` is aborted, its
 * slot given back either way.
 */
import postgres from 'postgres'

import { PgschedError } from '../core/errors.ts'
import { isDatabaseUnreachable, type Sql, type SqlPool } from './client.ts'
import { beginAcknowledged, CommitUncertainError } from './commit.ts'

/** Options of a GroupCommit. */
interface GroupCommitOptions<I> {
  /** Most calls in one transaction. @default 100 */
  maxBatch?: number
  /** Transactions in flight at once; more calls wait and form the next groups. @default 4 */
  maxInFlight?: number
  /**
   * Calls with the same key never share a transaction (e.g. one idempotency key, whose second
   * call must see the first committed).
   */
  keyOf?: (item: I) => string | undefined
  /**
   * Throws for an item that cannot be written; the call is rejected with that error before it
   * joins a group. It must refuse every value the write's statements could fail to build (JSON
   * that cannot be serialized, an invalid Date), since such a failure inside a shared transaction
   * is never reported (see the module note).
   */
  check?: (item: I) => void
  /**
   * How long a group's write may take. Past it the write is aborted (its `signal`), and its calls
   * are tried again in smaller groups once it has settled; a call written alone that times out
   * is rejected. Either way the slot is given back.
   * @default 30000
   */
  settleTimeoutMs?: number
}

/**
 * Writes a whole group atomically; returns one answer per item, in order. `signal` aborts when
 * the write has taken longer than the GroupCommit allows: the write should then end what it holds
 * (eachInTransaction ends its connection) so that it settles.
 */
export type WriteGroup<I, O> = (sql: SqlPool, items: I[], signal: AbortSignal) => Promise<O[]>

/**
 * A WriteGroup that writes each item with `write` in one shared transaction, with optional
 * statements before and after the items. Aborted, or failing with an error that is not the
 * server's (a statement that failed to build), it terminates its own connection's backend: the
 * transaction is rolled back, postgres.js fails what was waiting on the connection, and the pool
 * opens a fresh one, so a connection wedged or out of step (see the module note) neither stays
 * reserved nor serves anyone else.
 */
export function eachInTransaction<I, O>(
  write: (tx: Sql, item: I) => Promise<O>,
  around: { before?: (tx: Sql) => Promise<unknown>; after?: (tx: Sql) => Promise<unknown> } = {},
): WriteGroup<I, O> {
  const attempt = async (
    sql: SqlPool,
    items: I[],
    signal: AbortSignal,
    began: () => void,
  ): Promise<O[]> => {
    // Once the transaction has ended, its connection may be another caller's: never end it then.
    let ended = false
    // The error that made us end the connection: the caller hears it, not the connection's end.
    let cause: unknown
    try {
      // Resolves only after a COMMIT that may be acknowledged (db/commit.ts).
      return await beginAcknowledged(sql, async (tx) => {
        began()
        // In the round trip of `before`: which backend to end if the write is aborted.
        // Connection plumbing rather than a table query, so it lives here and not in queries/.
        // Awaited before the items, so that a group of one sends its statements alone,
        // unpipelined, and a failure to build them is reported at once.
        const [backend] = await Promise.all([
          tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`,
          around.before?.(tx),
        ])
        const pid = backend[0]!.pid
        onAbort(signal, () => {
          if (!ended) void terminateBackend(sql, pid)
        })
        try {
          const all = await Promise.all(items.map((item) => write(tx, item)))
          await around.after?.(tx)
          return all
        } catch (e) {
          // Not the server's error: a statement may have failed to build, and postgres.js may be
          // out of step with the connection (answers given to the wrong statements). End it
          // before it can serve anyone else.
          if (!(e instanceof postgres.PostgresError)) {
            cause = e
            await terminateBackend(sql, pid)
          }
          throw e
        }
      })
    } catch (e) {
      throw cause ?? e
    } finally {
      ended = true
    }
  }
  return async (sql, items, signal) => {
    let began = false
    try {
      return await attempt(sql, items, signal, () => {
        began = true
      })
    } catch (e) {
      // A connection ended as above reconnects, and postgres.js hands the end's error (57P01) to
      // the first statement on the new one: a BEGIN of ours failing that way wrote nothing, so
      // it is tried once more.
      if (began || !isDatabaseUnreachable(e) || signal.aborted) throw e
      return attempt(sql, items, signal, () => {})
    }
  }
}

/** Calls `f` when `signal` aborts, or now if it has. */
function onAbort(signal: AbortSignal, f: () => void): void {
  if (signal.aborted) f()
  else signal.addEventListener('abort', f, { once: true })
}

// Ends a wedged transaction from another connection of the pool. Best effort: if the database
// cannot be reached, neither can the transaction go on.
async function terminateBackend(sql: SqlPool, pid: number): Promise<void> {
  await sql`SELECT pg_terminate_backend(${pid})`.catch(() => {})
}

// The next turn of the event loop, after I/O callbacks already due. Deno has no global
// setImmediate; there, setTimeout(0) does the same at the cost of a millisecond.
const nextTurn: (f: () => void) => void =
  (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ??
  ((f) => setTimeout(f, 0))

// How long an aborted write may take to settle (eachInTransaction's connection to be ended)
// before its calls are rejected without knowing whether it committed.
const ABORT_GRACE_MS = 2000

interface Pending<I, O> {
  item: I
  key: string | undefined
  resolve(o: O): void
  reject(e: unknown): void
}

type Settled<O> = { ok: true; value: O[] } | { ok: false; error: unknown } | undefined

/** `p`'s outcome, or undefined if it has not settled within `ms`. */
function settleWithin<O>(p: Promise<O[]>, ms: number): Promise<Settled<O>> {
  let timer: ReturnType<typeof setTimeout>
  return Promise.race([
    p.then(
      (value): Settled<O> => ({ ok: true, value }),
      (error): Settled<O> => ({ ok: false, error }),
    ),
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * `make(sql)` once per pool, the same value for every later call with that pool: a GroupCommit
 * groups only calls on its own pool, so calls on a pool opened for one request (api/app.ts,
 * PerRequestSql) form their own groups, while calls on a shared pool group across requests.
 */
export function perPool<T extends object>(make: (sql: SqlPool) => T): (sql: SqlPool) => T {
  const made = new WeakMap<SqlPool, T>()
  return (sql) => {
    let value = made.get(sql)
    if (value === undefined) {
      value = make(sql)
      made.set(sql, value)
    }
    return value
  }
}

/** Writes items with `write`, grouping concurrent ones into shared transactions. */
export class GroupCommit<I, O> {
  readonly #sql: SqlPool
  readonly #write: WriteGroup<I, O>
  readonly #maxBatch: number
  readonly #maxInFlight: number
  readonly #keyOf: (item: I) => string | undefined
  readonly #check: (item: I) => void
  readonly #settleTimeoutMs: number
  #queue: Pending<I, O>[] = []
  #inFlight = 0
  #pumpScheduled = false

  constructor(sql: SqlPool, write: WriteGroup<I, O>, o: GroupCommitOptions<I> = {}) {
    this.#sql = sql
    this.#write = write
    this.#maxBatch = o.maxBatch ?? 100
    this.#maxInFlight = o.maxInFlight ?? 4
    this.#keyOf = o.keyOf ?? (() => undefined)
    this.#check = o.check ?? (() => {})
    this.#settleTimeoutMs = o.settleTimeoutMs ?? 30_000
  }

  /** Writes `item`; resolves once the transaction that wrote it has committed. */
  run(item: I): Promise<O> {
    return new Promise((resolve, reject) => {
      // A throw here (a refused item, a failing key) rejects this call alone, before it can
      // join a group.
      this.#check(item)
      this.#queue.push({ item, key: this.#keyOf(item), resolve, reject })
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
      // #commit never rejects and always settles (its writes are timed), so the slot comes back.
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
      const k = p.key
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
    const abort = new AbortController()
    // A write that throws instead of returning a promise is a failed write like any other.
    const write = Promise.resolve().then(() =>
      this.#write(
        this.#sql,
        group.map((p) => p.item),
        abort.signal,
      ),
    )
    let outcome = await settleWithin(write, this.#settleTimeoutMs)
    let timedOut = false
    if (outcome === undefined) {
      timedOut = true
      abort.abort()
      // Its outcome decides: committed after all, or failed (rolled back), so safe to retry.
      outcome = await settleWithin(write, ABORT_GRACE_MS)
    }
    if (outcome === undefined) {
      // Still nothing: whether it committed is unknown, so none of its calls is tried again.
      const e = new CommitUncertainError(
        `the write did not finish within ${this.#settleTimeoutMs} ms and was abandoned`,
      )
      for (const p of group) p.reject(e)
      return
    }
    if (outcome.ok) {
      for (const [i, p] of group.entries()) p.resolve(outcome.value[i] as O)
      return
    }
    if (outcome.error instanceof CommitUncertainError) {
      // It may have committed: trying its calls again could write them twice.
      for (const p of group) p.reject(outcome.error)
      return
    }
    if (group.length === 1) {
      const { error: cause } = outcome
      group[0]!.reject(
        timedOut
          ? new PgschedError(
              'internal',
              `the write did not finish within ${this.#settleTimeoutMs} ms and was rolled back`,
              { cause },
            )
          : cause,
      )
      return
    }
    const half = Math.ceil(group.length / 2)
    await Promise.all([this.#commit(group.slice(0, half)), this.#commit(group.slice(half))])
  }
}
