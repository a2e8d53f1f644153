/**
 * @module Gauges of leader-only state (queue depth, workers, degradation level, the resolver's
 * breaker). Only the leader knows them, and a dashboard sums or maxes them over every scheduler
 * process, so a process that does not lead must not keep reporting what it read when it did.
 *
 * Unregistering an observer does not withdraw its series: the OTel SDK's metric storage, with the
 * cumulative temporality Prometheus uses, keeps reporting an attribute set's last value after its
 * callback stops observing it (test/scheduler-telemetry.test.ts shows it). So these gauges stay
 * registered for the life of the service and, while it does not lead, read 0 for every series
 * they reported before: 0 is neutral for the sum (depth, workers) and the max (level, breaker)
 * taken across processes. A process that never led reports nothing.
 */
import type { Attributes } from '@opentelemetry/api'

import { type GaugeName, type Observation, observe } from '../telemetry/metrics.ts'

/**
 * Observes `name` from `read`, which returns the readings while this process leads and
 * undefined otherwise; a series reported before and missing now reads 0. Returns the removal.
 */
export function observeLeaderState(
  name: GaugeName,
  read: () => readonly Observation[] | undefined,
): () => void {
  const seen = new Map<string, Attributes | undefined>()
  return observe(name, () => {
    const out: Observation[] = [...(read() ?? [])]
    const now = new Set<string>()
    for (const [, attributes] of out) {
      const key = keyOf(attributes)
      now.add(key)
      seen.set(key, attributes)
    }
    for (const [key, attributes] of seen) if (!now.has(key)) out.push([0, attributes])
    return out
  })
}

function keyOf(attributes: Attributes | undefined): string {
  return JSON.stringify(Object.entries(attributes ?? {}).sort(([a], [b]) => (a < b ? -1 : 1)))
}
