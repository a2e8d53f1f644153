/**
 * The otel/ folder as an operator uses it: promtool accepts the rule files and passes their unit
 * tests (otel/alerts.test.yml), every alert of the operations design is there with a severity,
 * a summary, a description and a runbook, and has a case that fires and one that does not; the
 * example Prometheus config passes `promtool check config`; the collector config parses and its
 * pipelines use what it defines; and every metric name in the rules and the dashboard is one that
 * pgsched's /metrics actually exposes (the real OpenTelemetry Prometheus serializer over the
 * instruments of src/telemetry/metrics.ts), each listed in otel/METRICS.md.
 */
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { metrics } from '@opentelemetry/api'
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'

import { type GaugeName, instruments, observe } from '../src/telemetry/metrics.ts'

const OTEL = 'otel'
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's datasource input, written literally
const DS_UID = '${DS_PROMETHEUS}'
const INSTALL =
  'promtool is missing: it comes with the Debian package prometheus ' +
  '(apt-get install -y --no-install-recommends prometheus; .ci/run installs it)'

/** Runs promtool; fails the test with how to install it when it is not there. */
function promtool(args: string[], cwd = OTEL): { code: number | null; output: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 60_000 })
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') throw new Error(INSTALL)
  if (r.error) throw r.error
  return { code: r.status, output: `${r.stdout}${r.stderr}` }
}

function yamlFile<T>(name: string): T {
  return parseYaml(readFileSync(join(OTEL, name), 'utf8')) as T
}

interface RuleFile {
  groups: {
    name: string
    rules: {
      alert?: string
      record?: string
      expr: string
      for?: string
      labels?: Record<string, string>
      annotations?: Record<string, string>
    }[]
  }[]
}
interface RuleTests {
  tests: {
    name: string
    alert_rule_test?: {
      alertname: string
      exp_alerts: { exp_labels?: Record<string, string> }[] | null
    }[]
  }[]
}
interface Dashboard {
  schemaVersion: number
  __inputs: { name: string; pluginId: string }[]
  panels: {
    type: string
    title: string
    datasource?: { uid: string }
    targets?: { expr: string; datasource?: { uid: string } }[]
  }[]
  templating: { list: { name: string; definition?: string }[] }
}

const alerts = yamlFile<RuleFile>('alerts.yml')
const recording = yamlFile<RuleFile>('recording.yml')
const alertRules = alerts.groups.flatMap((g) => g.rules)
const dashboard = JSON.parse(
  readFileSync(join(OTEL, 'grafana-dashboard.json'), 'utf8'),
) as Dashboard

/**
 * The operations design's monitoring section (key metrics and alerting thresholds), plus a
 * missed cron tick and a missing leader: alert name → its severities.
 */
const DESIGN_ALERTS: Record<string, string[]> = {
  PgschedJobSuccessRateLow: ['warning', 'critical'],
  PgschedSchedulingLatencyHigh: ['warning', 'critical'],
  PgschedWorkerUtilizationLow: ['warning', 'critical'],
  PgschedQueueDepthHigh: ['critical'],
  PgschedWorkersDead: ['critical'],
  PgschedAttemptFailureRateHigh: ['critical'],
  PgschedCronTickMissed: ['warning'],
  PgschedNoLeader: ['critical'],
}

describe('rules', () => {
  it('promtool check rules accepts the recording and alert rules', () => {
    const r = promtool(['check', 'rules', 'recording.yml', 'alerts.yml'])
    expect(r.code, r.output).toBe(0)
    expect(r.output).toContain('SUCCESS: 12 rules found')
    expect(r.output).toContain('SUCCESS: 11 rules found')
  })

  it('promtool test rules passes every unit test of otel/alerts.test.yml', () => {
    const r = promtool(['test', 'rules', 'alerts.test.yml'])
    expect(r.code, r.output).toBe(0)
    expect(r.output).toContain('SUCCESS')
  })

  it('every alert of the design is there, with its severities, and nothing else', () => {
    const found: Record<string, string[]> = {}
    for (const rule of alertRules) {
      if (!rule.alert) continue
      found[rule.alert] = [...(found[rule.alert] ?? []), rule.labels?.severity ?? '(none)']
    }
    expect(found).toEqual(DESIGN_ALERTS)
  })

  it('every alert has a summary, a description and a runbook hint', () => {
    for (const rule of alertRules) {
      const a = rule.annotations ?? {}
      for (const key of ['summary', 'description', 'runbook']) {
        expect(a[key]?.trim(), `${rule.alert} (${rule.labels?.severity}): ${key}`).toBeTruthy()
      }
      expect(a.runbook, `${rule.alert}: runbook points at otel/README.md`).toContain(
        'otel/README.md#runbooks',
      )
    }
  })

  it('every alert and severity has a unit test where it fires and one where it stays silent', () => {
    const cases = yamlFile<RuleTests>('alerts.test.yml').tests.flatMap(
      (t) => t.alert_rule_test ?? [],
    )
    for (const [alert, severities] of Object.entries(DESIGN_ALERTS)) {
      const mine = cases.filter((c) => c.alertname === alert)
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert}: a case where it does not fire`,
      ).toBe(true)
      for (const severity of severities) {
        expect(
          mine.some((c) => (c.exp_alerts ?? []).some((e) => e.exp_labels?.severity === severity)),
          `${alert}: a case where its ${severity} rule fires`,
        ).toBe(true)
      }
    }
  })
})

describe('metric names', () => {
  let exposition = ''
  let families: Map<string, string>

  beforeAll(async () => {
    // The exporter pgsched's /metrics uses, over every instrument with one value each.
    const exporter = new PrometheusExporter({ preventServerStart: true })
    const provider = new MeterProvider({ readers: [exporter] })
    metrics.setGlobalMeterProvider(provider)
    const source = readFileSync('src/telemetry/metrics.ts', 'utf8')
    const gauges = [...source.matchAll(/^ {2}'([a-z_.]+)': \{/gm)].map((m) => m[1] as GaugeName)
    expect(gauges.length, 'gauges found in metrics.ts').toBeGreaterThan(0)
    const stops = gauges.map((name) => observe(name, () => [[1, { any: 'x' }]]))
    for (const instrument of Object.values(instruments())) {
      if ('add' in instrument) instrument.add(1, { any: 'x' })
      else instrument.record(0.1, { any: 'x' })
    }
    const { resourceMetrics } = await exporter.collect()
    exposition = new PrometheusSerializer().serialize(resourceMetrics)
    for (const stop of stops) stop()
    await provider.shutdown()
    metrics.disable()
    families = new Map(
      [...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!] as const),
    )
    families.delete('target_info')
  })

  /** The sample names a family gives: a histogram's _bucket, _sum and _count. */
  function sampleNames(): Set<string> {
    const names = new Set<string>()
    for (const [name, type] of families) {
      if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s)
      else names.add(name)
    }
    return names
  }

  /** The pgsched metric names an expression reads (recording rules have a colon, not these). */
  function metricsIn(expr: string): string[] {
    return [...expr.matchAll(/\b(?:pgsched|http_server)_[a-z0-9_]+\b/g)].map((m) => m[0])
  }

  it('every series carries otel_scope_name="pgsched" and no unit suffix', () => {
    expect(families.size).toBeGreaterThan(15)
    expect(exposition).toMatch(/^pgsched_queue_wait_bucket\{.*otel_scope_name="pgsched"/m)
    for (const name of families.keys()) expect(name).not.toMatch(/_seconds$/)
  })

  it('the rules and the dashboard read only metrics pgsched exposes', () => {
    const known = sampleNames()
    const exprs = [
      ...[...alerts.groups, ...recording.groups].flatMap((g) =>
        g.rules.map((r) => [`rule ${r.alert ?? r.record}`, r.expr] as const),
      ),
      ...dashboard.panels.flatMap((p) =>
        (p.targets ?? []).map((t) => [`panel "${p.title}"`, t.expr] as const),
      ),
      ...dashboard.templating.list.map((v) => [`variable ${v.name}`, v.definition ?? ''] as const),
    ]
    for (const [where, expr] of exprs) {
      for (const name of metricsIn(expr))
        expect(known.has(name), `${where} reads ${name}`).toBe(true)
    }
  })

  it('otel/METRICS.md lists every metric under its Prometheus name', () => {
    const doc = readFileSync(join(OTEL, 'METRICS.md'), 'utf8')
    for (const [name, type] of families) {
      expect(doc, name).toContain(`\`${type === 'histogram' ? `${name}_bucket` : name}\``)
    }
  })
})

describe('dashboard', () => {
  it('is a Grafana dashboard with a Prometheus datasource input', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(39)
    expect(dashboard.__inputs).toContainEqual(
      expect.objectContaining({ name: 'DS_PROMETHEUS', pluginId: 'prometheus' }),
    )
  })

  it('every panel queries the input datasource', () => {
    const panels = dashboard.panels.filter((p) => p.type !== 'row')
    expect(panels.length).toBeGreaterThan(15)
    for (const p of panels) {
      expect(p.datasource?.uid, p.title).toBe(DS_UID)
      expect(p.targets?.length, `${p.title}: targets`).toBeGreaterThan(0)
      for (const t of p.targets!) {
        expect(t.expr.trim(), p.title).toBeTruthy()
        expect(t.datasource?.uid, p.title).toBe(DS_UID)
      }
    }
  })

  it('has the panels the design asks for', () => {
    const titles = dashboard.panels.map((p) => p.title)
    for (const wanted of [
      /^Submissions\/s/,
      /^Runs finished/,
      /^Job success rate/,
      /^Queue wait p50 \/ p99/,
      /^Attempt duration p50 \/ p99/,
      /^Queue depth/,
      /^Worker utilization/,
      /^Workers by state/,
      /^Leader$/,
      /^Leader changes/,
      /^Degradation level/,
      /^Dead letters/,
      /^Cron ticks fired \/ missed/,
      /^Cron tick lateness/,
      /^HTTP p99 by route/,
    ]) {
      expect(
        titles.some((t) => wanted.test(t)),
        `a panel titled ${wanted}`,
      ).toBe(true)
    }
  })
})

describe('example configs', () => {
  let dir: string
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'pgsched-otel-'))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('prometheus.yml passes promtool check config, rule files included', () => {
    // As an operator installs it: next to the rule files, with a real token file.
    for (const f of ['recording.yml', 'alerts.yml']) copyFileSync(join(OTEL, f), join(dir, f))
    writeFileSync(join(dir, 'token'), 'a-token\n')
    const config = readFileSync(join(OTEL, 'prometheus.yml'), 'utf8')
    expect(config).toContain('/etc/prometheus/pgsched-token')
    writeFileSync(
      join(dir, 'prometheus.yml'),
      config.replaceAll('/etc/prometheus/pgsched-token', join(dir, 'token')),
    )
    const r = promtool(['check', 'config', 'prometheus.yml'], dir)
    expect(r.code, r.output).toBe(0)
    expect(r.output).toContain('SUCCESS: 2 rule files found')
  })

  it('collector.yaml parses, receives OTLP on 4317 and 4318, and its pipelines use what it defines', () => {
    interface Collector {
      receivers: { otlp: { protocols: { grpc: { endpoint: string }; http: { endpoint: string } } } }
      service: { pipelines: Record<string, Record<string, string[]>> }
      [section: string]: unknown
    }
    const c = yamlFile<Collector>('collector.yaml')
    expect(c.receivers.otlp.protocols.grpc.endpoint).toMatch(/:4317$/)
    expect(c.receivers.otlp.protocols.http.endpoint).toMatch(/:4318$/)
    expect(Object.keys(c.service.pipelines).sort()).toEqual(['metrics', 'traces'])
    for (const [pipeline, parts] of Object.entries(c.service.pipelines)) {
      for (const [kind, names] of Object.entries(parts)) {
        const defined = Object.keys((c[kind] as Record<string, unknown>) ?? {})
        for (const name of names) expect(defined, `${pipeline}: ${kind} ${name}`).toContain(name)
      }
    }
    expect(c.service.pipelines.traces!.exporters).toEqual(['otlp/traces'])
    expect(c.service.pipelines.metrics!.exporters).toEqual(['prometheus'])
  })
})
