/** @module Writes bench/RESULTS.md (tables, targets, cost) and bench/results.json. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'

import { charts } from './charts.ts'
import type { Figure, Section } from './context.ts'
import { METRIC, SYSTEMS } from './metrics.ts'

/** Everything one run measured. */
export interface Results {
  quick: boolean
  seconds: number
  machine: Record<string, string>
  versions: Record<string, string>
  postgres: Record<string, string>
  sections: Section[]
  /** Sections measured later by `--only=… --merge` runs, with how and where they ran. */
  merged?: Merged[]
}

/** A later run whose sections replaced or joined this one's. */
export interface Merged {
  /** The section ids it measured. */
  ids: string[]
  /** When it ran (ISO date). */
  date: string
  quick: boolean
  seconds: number
  machine: Record<string, string>
}

/**
 * `previous` with the sections of `fresh` (a run of some workloads) in place of its own of the same
 * id, a new one after the section it follows in `order` (the workloads' ids); the header stays
 * the previous run's and `merged` says what came from which run.
 */
export function mergeResults(previous: Results, fresh: Results, order: string[]): Results {
  const byId = new Map(previous.sections.map((s) => [s.id, s]))
  for (const s of fresh.sections) byId.set(s.id, s)
  const rank = (id: string) => (order.includes(id) ? order.indexOf(id) : order.length)
  const ids = fresh.sections.map((s) => s.id)
  return {
    ...previous,
    sections: [...byId.values()].sort((a, b) => rank(a.id) - rank(b.id)),
    merged: [
      // A section measured again leaves the older run's note.
      ...(previous.merged ?? [])
        .map((m) => ({ ...m, ids: m.ids.filter((id) => !ids.includes(id)) }))
        .filter((m) => m.ids.length > 0),
      {
        ids,
        date: new Date().toISOString().slice(0, 10),
        quick: fresh.quick,
        seconds: fresh.seconds,
        machine: fresh.machine,
      },
    ],
  }
}

/** Sentences saying which sections came from later runs (and whether the machine was the same). */
function mergedNote(r: Results): string[] {
  return (r.merged ?? []).map((m) => {
    const same = JSON.stringify(m.machine) === JSON.stringify(r.machine)
    return `${m.ids.length === 1 ? 'Section' : 'Sections'} ${m.ids.map((id) => `\`${id}\``).join(', ')}: measured later, on ${m.date}, by \`npm run bench -- --only=${m.ids.join(',')} --merge${m.quick ? ' --quick' : ''}\` in ${m.seconds} s, ${same ? 'on the same machine' : `on another machine (${Object.values(m.machine).join(', ')})`}.`
  })
}

/** A 2-vCPU cloud machine's price, for the cost section (AWS c7i.large on demand, us-east-1). */
const PRICE_PER_HOUR = 0.0893
const PRICE_NOTE = 'AWS c7i.large (2 vCPU) on demand in us-east-1, $0.0893 an hour'

const fmt = (v: number) =>
  Number.isNaN(v)
    ? 'n/a'
    : v >= 100
      ? Math.round(v).toLocaleString('en-US')
      : v.toFixed(v >= 10 ? 1 : 2)

function figure(sections: Section[], system: string, metric: string): Figure | undefined {
  for (const s of sections) {
    const f = s.figures.find((x) => x.system === system && x.metric === metric)
    if (f) return f
  }
  return undefined
}

function find(sections: Section[], system: string, metric: string): number {
  return figure(sections, system, metric)?.value ?? Number.NaN
}

/** A figure's value as the tables show it, with its slow mark. */
const shown = (f: Figure) => `${fmt(f.value)}${f.slow ? ` (${f.slow})` : ''}`

function targets(s: Section[]): string[][] {
  const p = (m: string) => find(s, SYSTEMS.pgsched, m)
  const g = (m: string) => find(s, SYSTEMS.graphile, m)
  const check = (ok: boolean | undefined) =>
    ok === undefined ? 'not measured' : ok ? 'met' : 'NOT met'
  const known = (...v: number[]) => (v.some(Number.isNaN) ? undefined : true)
  const rows: string[][] = []
  const rest = p(METRIC.restSubmit64)
  const restP99 = p(METRIC.restSubmit64P99)
  rows.push([
    'REST submit, 64 clients: ≥ 5,000 jobs/s with p99 < 50 ms',
    `${fmt(rest)} jobs/s, p99 ${fmt(restP99)} ms`,
    check(known(rest, restP99) && rest >= 5000 && restP99 < 50),
  ])
  const restFloor = find(s, SYSTEMS.restFloor, METRIC.restSubmit64)
  const restFloorP99 = find(s, SYSTEMS.restFloor, METRIC.restSubmit64P99)
  rows.push([
    'REST submit, 64 clients ≥ 0.6 × the REST floor measured in the same run',
    `${fmt(rest)} vs ${fmt(restFloor)} jobs/s = ${fmt(rest / restFloor)} × (p99 ${fmt(restP99)} vs ${fmt(restFloorP99)} ms)`,
    check(known(rest, restFloor) && rest / restFloor >= 0.6),
  ])
  for (const [label, m, target] of [
    [
      'SQL submit, one per transaction, 16 connections ≥ 1.0 × Graphile `add_job`',
      METRIC.sqlSubmit,
      1,
    ],
    ['batch submit, 1,000 per call ≥ 0.5 × Graphile `add_jobs`', METRIC.batchSubmit, 0.5],
  ] as const) {
    const ratio = p(m) / g(m)
    rows.push([
      label,
      `${fmt(p(m))} vs ${fmt(g(m))} jobs/s = ${fmt(ratio)} ×`,
      check(known(ratio) && ratio >= target),
    ])
  }
  for (const [label, m] of [
    ['concurrency 10', METRIC.drainTask10],
    ['concurrency 25', METRIC.drainTask25],
  ] as const) {
    const ratio = p(m) / g(m)
    rows.push([
      `end to end ≥ 1.0 × raw Graphile Worker (${label})`,
      `${fmt(p(m))} vs ${fmt(g(m))} runs/s = ${fmt(ratio)} ×`,
      check(known(ratio) && ratio >= 1),
    ])
  }
  const p50 = p(METRIC.pickup50P99)
  const p1000 = p(METRIC.pickup1000P99)
  rows.push(['pickup p99 ≤ 15 ms at 50 runs/s', `${fmt(p50)} ms`, check(known(p50) && p50 <= 15)])
  rows.push([
    'pickup p99 < 50 ms at 1,000 runs/s',
    `${fmt(p1000)} ms`,
    check(known(p1000) && p1000 < 50),
  ])
  const fan = p(METRIC.fanOutAll)
  rows.push([
    '10,000-schedule fan-out enqueued in < 2 s',
    `${fmt(fan)} ms`,
    check(known(fan) && fan < 2000),
  ])
  const claimRatio = p(METRIC.claimDeepP50) / p(METRIC.claimEmptyP50)
  rows.push([
    'claim latency at depth ≤ 2 × empty queue',
    `${fmt(p(METRIC.claimDeepP50))} vs ${fmt(p(METRIC.claimEmptyP50))} ms = ${fmt(claimRatio)} ×`,
    check(known(claimRatio) && claimRatio <= 2),
  ])
  const telemetry = p(METRIC.telemetryRatioTask10)
  rows.push([
    'telemetry on costs < 10 % of end-to-end throughput (default sampling)',
    `on ÷ off ${fmt(telemetry)} × (${fmt(p(METRIC.telemetryOnTask10))} vs ${fmt(p(METRIC.telemetryOffTask10))} runs/s)`,
    check(known(telemetry) && telemetry >= 0.9),
  ])
  // Commands against the machine's spawn floor, and the sandbox's cost, from the e2e drains.
  const slow = (...m: string[]) =>
    m.some((x) => figure(s, SYSTEMS.pgsched, x)?.slow) ? ' (slow: see the e2e section)' : ''
  const floor = p(METRIC.spawnFloor10)
  const none = p(METRIC.drainCommand10None)
  const noneRatio = p(METRIC.commandFloorRatioNone)
  rows.push([
    'command drain, sandbox none ≥ 0.8 × the spawn floor (concurrency 10)',
    `${fmt(none)} runs/s vs ${fmt(floor)} spawns/s = ${fmt(noneRatio)} ×${slow(METRIC.commandFloorRatioNone)}`,
    check(known(noneRatio) && noneRatio >= 0.8),
  ])
  const bwrap = p(METRIC.drainCommand10)
  const bwrapRatio = p(METRIC.commandBwrapOverNone)
  rows.push([
    'sandboxed (bwrap) drain ≥ 0.5 × the unsandboxed (concurrency 10)',
    `${fmt(bwrap)} vs ${fmt(none)} runs/s = ${fmt(bwrapRatio)} × (${fmt(p(METRIC.commandFloorRatioBwrap))} × the spawn floor); sandbox cost ${fmt(p(METRIC.sandboxCostBwrap))} ms per command, ${fmt(p(METRIC.sandboxCostBwrapSlot))} ms per slot${slow(METRIC.commandBwrapOverNone)}`,
    check(known(bwrapRatio) && bwrapRatio >= 0.5),
  ])
  // History at steady state (issue 14): 30 days of runs against an empty history.
  for (const [what, m] of [
    ['submit', METRIC.historySubmitRatio],
    ['claim', METRIC.historyClaimRatio],
    ['GET /v1/jobs/{id}/runs', METRIC.historyGetRatio],
  ] as const) {
    const ratio = p(m)
    rows.push([
      `${what} p50 with 30 days of history ≤ 1.2 × empty history`,
      `${fmt(ratio)} ×`,
      check(known(ratio) && ratio <= 1.2),
    ])
  }
  const grew = p(METRIC.historySizeRatio)
  rows.push([
    'history tables flat after day 30 (simulated day 60 ÷ day 30 ≤ 1.1)',
    `${fmt(p(METRIC.historySizeDay60))} vs ${fmt(p(METRIC.historySizeDay30))} MB = ${fmt(grew)} ×`,
    check(known(grew) && grew <= 1.1),
  ])
  return rows
}

/** A markdown table. */
export function table(header: string[], rows: string[][]): string {
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n')
}

function sectionTable(s: Section): string {
  // One row per metric, one column per system, and pgsched ÷ each baseline.
  const systems = [...new Set(s.figures.map((f) => f.system))]
  const metrics = [...new Set(s.figures.map((f) => f.metric))]
  const unit = (m: string) => s.figures.find((f) => f.metric === m)!.unit
  const value = (sys: string, m: string): Figure | undefined =>
    s.figures.find((f) => f.system === sys && f.metric === m)
  // A section of pgsched alone in several settings (e.g. runtimes) has no baselines.
  const baselines = systems.includes(SYSTEMS.pgsched)
    ? systems.filter((x) => x !== SYSTEMS.pgsched)
    : []
  const rows = metrics.map((m) => {
    const mine = value(SYSTEMS.pgsched, m)?.value
    return [
      m,
      unit(m),
      ...systems.map((sys) => {
        const v = value(sys, m)
        return v ? shown(v) : '—'
      }),
      ...baselines.map((b) => {
        const other = value(b, m)?.value
        return mine !== undefined && other ? `${fmt(mine / other)} ×` : '—'
      }),
    ]
  })
  return table(['metric', 'unit', ...systems, ...baselines.map((b) => `pgsched ÷ ${b}`)], rows)
}

function costSection(sections: Section[]): string {
  const perJob: Record<string, number> = {}
  for (const s of sections) {
    for (const [k, v] of Object.entries(s.cpuSecondsPerJob ?? {})) perJob[k] = (perJob[k] ?? 0) + v
  }
  const rows = Object.entries(perJob).map(([what, cpu]) => {
    const perMillion = cpu * 1e6
    // Two vCPUs for an hour give 7,200 CPU-seconds.
    const dollars = (perMillion / 7200) * PRICE_PER_HOUR
    return [what, fmt(perMillion), `$${dollars.toFixed(3)}`]
  })
  return [
    table(
      ['what', 'CPU-seconds per million jobs (pgsched + Postgres)', 'dollars per million jobs'],
      rows,
    ),
    '',
    `Price: ${PRICE_NOTE}, fully used. The design's figures: $990 per million executed jobs, $10 per million scheduling operations.`,
  ].join('\n')
}

/** Writes RESULTS.md, results.json and the charts (SVG files) beside the benchmark. */
export function writeResults(r: Results): void {
  writeFileSync('bench/results.json', `${JSON.stringify(r, null, 2)}\n`)
  const drawn = charts(r.sections)
  for (const c of drawn) writeFileSync(`bench/${c.file}`, c.svg)
  const chartsOf = (s: Section) =>
    drawn.filter((c) => c.section === s.id).flatMap((c) => [`![${c.title}](${c.file})`, ''])
  const out = [
    '# pgsched benchmark results',
    '',
    `Written by \`npm run bench${r.quick ? ' -- --quick' : ''}\` in ${r.seconds} s${r.quick ? ' (quick mode: smaller counts, shorter windows)' : ''}. Every workload ran on pgsched and on the baselines in this same run, on this machine.`,
    '',
    ...mergedNote(r).flatMap((n) => [n, '']),
    table(['machine', ''], Object.entries(r.machine)),
    '',
    table(['software', 'version'], Object.entries(r.versions)),
    '',
    table(['PostgreSQL setting', 'value'], Object.entries(r.postgres)),
    '',
    '## Targets',
    '',
    table(['target', 'measured', ''], targets(r.sections)),
    '',
    ...r.sections.flatMap((s) => [
      `## ${s.title}`,
      '',
      ...(s.slow ? [`**${s.slow}.**`, ''] : []),
      ...(s.figures.length ? [sectionTable(s), ''] : []),
      ...(s.extra ? [s.extra, ''] : []),
      ...chartsOf(s),
      ...s.notes.map((n) => `- ${n}`),
      '',
    ]),
    '## Cost',
    '',
    costSection(r.sections),
    '',
    // The hand-written analysis: where the time goes and what was changed.
    ...(existsSync('bench/findings.md')
      ? [readFileSync('bench/findings.md', 'utf8').trim(), '']
      : []),
  ]
  writeFileSync('bench/RESULTS.md', `${out.join('\n')}\n`)
}
