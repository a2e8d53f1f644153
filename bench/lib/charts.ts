/**
 * @module The charts RESULTS.md shows, drawn from results.json: pickup latency distributions per
 * rate, throughput bars per workload with its baselines, latency against history depth. A section
 * or field that is missing skips its chart; nothing here throws on a partial results.json.
 */
import type { Figure, Section } from './context.ts'
import { type BarGroup, barChart, type Line, lineChart, short } from './svg.ts'

/** One chart: its file (beside RESULTS.md), the section it belongs under, and its SVG. */
export interface Chart {
  file: string
  section: string
  title: string
  svg: string
}

const PICKUP = /^pickup p(\d+(?:\.\d+)?) at ([\d,]+) runs\/s$/

/**
 * rate → system → [ms, percentile] points: a figure's whole distribution (`percentiles`, p0..p100,
 * which the pickup workload puts on its p50 figures) where present, else the p50/p95/p99 figures.
 */
export function pickupDistributions(s: Section): Map<number, Map<string, [number, number][]>> {
  const out = new Map<number, Map<string, [number, number][]>>()
  const full = new Set<string>()
  for (const f of s.figures) {
    const m = PICKUP.exec(f.metric)
    if (!m) continue
    const rate = Number(m[2]!.replace(/,/g, ''))
    if (!out.has(rate)) out.set(rate, new Map())
    const bySystem = out.get(rate)!
    const key = `${rate} ${f.system}`
    const all = f.percentiles
    if (Array.isArray(all) && all.length > 1) {
      // values[i] is the i-th of 101 percentiles; another length is spread over 0..100.
      bySystem.set(
        f.system,
        all.map((ms, i): [number, number] => [Number(ms), (i * 100) / (all.length - 1)]),
      )
      full.add(key)
    } else if (!full.has(key)) {
      bySystem.set(
        f.system,
        [...(bySystem.get(f.system) ?? []), [f.value, Number(m[1])] as [number, number]].sort(
          (a, b) => a[1] - b[1],
        ),
      )
    }
  }
  return out
}

function pickupCharts(s: Section): Chart[] {
  const charts: Chart[] = []
  const dists = pickupDistributions(s)
  for (const rate of [...dists.keys()].sort((a, b) => a - b)) {
    const systems = dists.get(rate)!
    const full = [...systems.values()].some((p) => p.length > 10)
    const title = `Pickup latency at ${rate.toLocaleString('en-US')} runs/s: ${full ? 'distribution' : 'percentiles'} (queued → running)`
    charts.push({
      file: `pickup-${rate}.svg`,
      section: s.id,
      title,
      svg: lineChart({
        title,
        x: { label: 'pickup latency, ms (log scale)', log: true },
        y: { label: 'percentile', min: 0, max: 100 },
        lines: [...systems].map(([name, points]): Line => ({ name, points })),
        legend: 'bottom-right',
      }),
    })
  }
  return charts
}

/** Command drains and the spawn floor, grouped by concurrency with the floor as their baseline. */
const COMMAND = /^drain `true` commands, concurrency (\d+), sandbox (\w+)$/
const FLOOR = /^spawn floor: .*concurrency (\d+)$/

/** Where a throughput figure goes: its group (a bar block) and its bar's name. */
function placeOf(f: Figure): { group: string; bar: string } {
  const c = COMMAND.exec(f.metric)
  if (c) return { group: `true commands, concurrency ${c[1]}`, bar: `${f.system}, sandbox ${c[2]}` }
  const floor = FLOOR.exec(f.metric)
  if (floor) return { group: `true commands, concurrency ${floor[1]}`, bar: 'spawn floor' }
  return { group: f.metric, bar: f.system }
}

/** Throughput bars of a section: its per-second figures, in groups of at least two bars. */
function throughputChart(s: Section): Chart | undefined {
  const groups = new Map<string, BarGroup>()
  for (const f of s.figures) {
    if (!/\/s$/.test(f.unit) || !Number.isFinite(f.value)) continue
    const { group, bar } = placeOf(f)
    if (!groups.has(group)) groups.set(group, { name: group, bars: [] })
    groups.get(group)!.bars.push({
      name: bar,
      value: f.value,
      label: `${short(f.value)} ${f.unit}${f.slow ? ' (slow)' : ''}`,
    })
  }
  // A group with one bar compares nothing.
  const compared = [...groups.values()].filter((g) => g.bars.length > 1)
  if (compared.length === 0) return undefined
  for (const g of compared) {
    // The baseline bars (spawn floor, other systems) beside pgsched's, pgsched first.
    g.bars.sort(
      (a, b) => Number(b.name.startsWith('pgsched')) - Number(a.name.startsWith('pgsched')),
    )
  }
  const title = `Throughput: ${s.title}`
  return {
    file: `throughput-${s.id}.svg`,
    section: s.id,
    title,
    svg: barChart(title, 'each group scaled to its largest bar; longer is faster', compared),
  }
}

/** Latency against history depth: the section's curves, one chart per unit. */
function curveCharts(s: Section): Chart[] {
  const byUnit = new Map<string, NonNullable<Section['curves']>>()
  for (const c of s.curves ?? []) {
    if (!c || !Array.isArray(c.points) || c.points.length === 0) continue
    const key = `${c.xUnit}\u0000${c.unit}`
    if (!byUnit.has(key)) byUnit.set(key, [])
    byUnit.get(key)!.push(c)
  }
  return [...byUnit].map(([key, curves], i) => {
    const [xUnit, unit] = key.split('\u0000') as [string, string]
    const title = `${s.id[0]!.toUpperCase()}${s.id.slice(1)}: ${unit} against ${xUnit}`
    return {
      file: `${s.id}${i ? `-${i + 1}` : ''}.svg`,
      section: s.id,
      title,
      svg: lineChart({
        title,
        x: { label: xUnit },
        y: { label: unit, min: 0 },
        lines: curves.map((c) => ({ name: c.name, points: c.points })),
      }),
    }
  })
}

/** Every chart the sections allow. */
export function charts(sections: readonly Section[]): Chart[] {
  const out: Chart[] = []
  for (const s of sections) {
    if (!s || !Array.isArray(s.figures)) continue
    if (s.id === 'pickup') out.push(...pickupCharts(s))
    const bars = throughputChart(s)
    if (bars) out.push(bars)
    out.push(...curveCharts(s))
  }
  return out
}
