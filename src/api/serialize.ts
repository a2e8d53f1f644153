/** @module Rows to JSON bodies: dates become ISO strings, keys stay snake_case. */

/** `T` with its Date fields as ISO strings, as JSON carries them. */
type Jsonified<T> = {
  [K in keyof T]: T[K] extends Date ? string : T[K] extends Date | null ? string | null : T[K]
}

/** Converts a row's Date fields to ISO strings. */
export function jsonify<T extends object>(row: T): Jsonified<T> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(row)) out[k] = v instanceof Date ? v.toISOString() : v
  return out as Jsonified<T>
}

/** A page of items and the cursor of the next page (null on the last page). */
export function page<T extends object>(rows: T[], limit: number, idOf: (row: T) => number) {
  const last = rows.length === limit ? rows.at(-1) : undefined
  return { items: rows.map(jsonify), next_cursor: last ? String(idOf(last)) : null }
}
