/**
 * @module The metrics of pgsched: every instrument, its unit and its attributes, in one place
 * (otel/METRICS.md lists their Prometheus names). Portable: only @opentelemetry/api. Without a
 * MeterProvider registered (see node-sdk.ts) every call is a cheap no-op.
 *
 * Gauges are observed from in-memory state that the components keep (`observe`): a scrape reads
 * memory only and never waits on the database.
 */
import { type Attributes, type Meter, type MeterProvider, metrics } from '@opentelemetry/api'

/** Seconds: queue wait and HTTP latency live between milliseconds and a few seconds. */
const LATENCY_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60,
]
/** Seconds: runs and tick lateness go from milliseconds to hours. */
const DURATION_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400,
]

/** The gauges that components feed through `observe`. */
export type GaugeName =
  | 'pgsched.leading'
  | 'pgsched.queue.depth'
  | 'pgsched.workers'
  | 'pgsched.worker.slots.busy'
  | 'pgsched.worker.slots.total'
  | 'pgsched.degradation.level'
  | 'pgsched.breaker.state'

const GAUGES: Record<GaugeName, { description: string; unit: string }> = {
  'pgsched.leading': {
    description: '1 while this process is the scheduler leader, else 0',
    unit: '1',
  },
  'pgsched.queue.depth': {
    description: 'Runs not yet finished, by status and queue (the leader counts them periodically)',
    unit: '{run}',
  },
  'pgsched.workers': {
    description:
      'Workers by state: active, stopping, stopped, dead (the leader counts them periodically)',
    unit: '{worker}',
  },
  'pgsched.worker.slots.busy': {
    description: 'Execution slots of this worker holding a run',
    unit: '{slot}',
  },
  'pgsched.worker.slots.total': { description: 'Execution slots of this worker', unit: '{slot}' },
  'pgsched.degradation.level': {
    description: 'The degradation level in force (0 normal … 4 refusing new jobs)',
    unit: '1',
  },
  'pgsched.breaker.state': {
    description: 'Circuit breakers by name: 0 closed, 1 half-open, 2 open',
    unit: '1',
  },
}

/** A reading of a gauge: one value per attribute set. */
export type Observation = readonly [value: number, attributes?: Attributes]

const observers = new Map<GaugeName, Set<() => Iterable<Observation>>>()

/**
 * Adds a source of readings to a gauge; returns its removal. The source runs at every collection
 * (a scrape or an OTLP export) and must answer from memory.
 */
export function observe(name: GaugeName, read: () => Iterable<Observation>): () => void {
  const set = observers.get(name) ?? new Set()
  observers.set(name, set)
  set.add(read)
  return () => void set.delete(read)
}

/** Every instrument, made once per MeterProvider (the global one changes when an SDK starts). */
function makeInstruments(meter: Meter) {
  for (const [name, { description, unit }] of Object.entries(GAUGES) as [
    GaugeName,
    (typeof GAUGES)[GaugeName],
  ][]) {
    meter.createObservableGauge(name, { description, unit }).addCallback((result) => {
      for (const read of observers.get(name) ?? []) {
        for (const [value, attributes] of read()) result.observe(value, attributes)
      }
    })
  }
  return {
    /** attributes: outcome (accepted|refused), reason (ok|validation|rate_limit|degradation|overload|unavailable|auth|internal: a 500), via (rest|batch) */
    submissions: meter.createCounter('pgsched.submissions', {
      description: 'Job submissions over REST, by outcome and reason',
      unit: '{submission}',
    }),
    /** attributes: status (succeeded|dead|cancelled: the run's final status), queue */
    runsFinished: meter.createCounter('pgsched.runs.finished', {
      description:
        'Runs that reached a final status, by status and queue (success rate: succeeded / (succeeded + dead))',
      unit: '{run}',
    }),
    /** attributes: outcome (succeeded|failed|timed_out|lost|interrupted|cancelled), queue */
    attemptsFinished: meter.createCounter('pgsched.attempts.finished', {
      description: 'Attempts finished, by outcome and queue',
      unit: '{attempt}',
    }),
    /** attributes: outcome, queue */
    attemptDuration: meter.createHistogram('pgsched.attempt.duration', {
      description: 'How long attempts ran, from start to result',
      unit: 's',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    }),
    /** attributes: queue, priority_band (high 1-3 | normal 4-7 | low 8-10) */
    queueWait: meter.createHistogram('pgsched.queue.wait', {
      description: 'Scheduling latency: from a run being due (queued, available) to its start',
      unit: 's',
      advice: { explicitBucketBoundaries: LATENCY_BUCKETS },
    }),
    /** attributes: queue */
    deadLetters: meter.createCounter('pgsched.dead_letters', {
      description: 'Runs that failed with no retry left (dead-lettered)',
      unit: '{run}',
    }),
    ticksFired: meter.createCounter('pgsched.ticks.fired', {
      description: 'Cron ticks fired by the leader',
      unit: '{tick}',
    }),
    ticksMissed: meter.createCounter('pgsched.ticks.missed', {
      description:
        'Cron ticks skipped because the leader was away (only the latest missed one fires)',
      unit: '{tick}',
    }),
    tickLateness: meter.createHistogram('pgsched.tick.lateness', {
      description: 'How late a cron tick fired after its scheduled instant',
      unit: 's',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    }),
    rescues: meter.createCounter('pgsched.rescues', {
      description: 'Running attempts of dead workers recorded as lost by the leader',
      unit: '{run}',
    }),
    leaderChanges: meter.createCounter('pgsched.leader.changes', {
      description: 'Times this process gained or lost the leadership',
      unit: '{change}',
    }),
    resolverFallbacks: meter.createCounter('pgsched.resolver.fallbacks', {
      description: 'Dependency sweeps that promoted waiting runs unchecked (the resolver fallback)',
      unit: '{sweep}',
    }),
    /** OTel HTTP conventions: http.request.method, http.route, http.response.status_code */
    httpServerDuration: meter.createHistogram('http.server.request.duration', {
      description: 'Duration of HTTP server requests',
      unit: 's',
      advice: { explicitBucketBoundaries: LATENCY_BUCKETS },
    }),
  }
}

export type Instruments = ReturnType<typeof makeInstruments>

const made = new WeakMap<MeterProvider, Instruments>()

/** The instruments of the MeterProvider in force (a no-op one without an SDK). */
export function instruments(): Instruments {
  const provider = metrics.getMeterProvider()
  const found = made.get(provider) ?? makeInstruments(provider.getMeter('pgsched'))
  made.set(provider, found)
  return found
}

/** The priority band of a run's priority (1 is the most urgent; 8-10 are dropped first). */
export function priorityBand(priority: number): 'high' | 'normal' | 'low' {
  return priority <= 3 ? 'high' : priority <= 7 ? 'normal' : 'low'
}
