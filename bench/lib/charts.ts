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
 * rate → system → [ms, percentile] points: the section's `percentiles` (p0..p100) where present,
 * else the p50/p95/p99 figures. Either nesting of `percentiles` (rate → system or system → rate)
 * is read.
 */
export function pickupDistributions(s: Section): Map<number, Map<string, [number, number][]>> {
  const out = new Map<number, Map<string, [number, number][]>>()
  const put = (rate: number, system: string, points: [number, number][]) => {
    if (!Number.isFinite(rate) || points.length === 0) return
    if (!out.has(rate)) out.set(rate, new Map())
    out.get(rate)!.set(system, points)
  }
  const rateOf = (k: string) => Number(k.replace(/,/g, ''))
  for (const [k1, inner] of Object.entries(s.percentiles ?? {})) {
    if (!inner || typeof inner !== 'object') continue
    for (const [k2, values] of Object.entries(inner)) {
      if (!Array.isArray(values)) continue
      const [rate, system] = Number.isFinite(rateOf(k1)) ? [rateOf(k1), k2] : [rateOf(k2), k1]
      // values[i] is the i-th of 101 percentiles; a shorter array is spread over 0..100.
      const step = values.length > 1 ? 100 / (values.length - 1) : 0
      put(
        rate,
        system,
        values.map((ms, i): [number, number] => [Number(ms), i * step]),
      )
    }
  }
  const fromFigures = new Map<string, [number, number][]>()
  for (const f of s.figures) {
    const m = PICKUP.exec(f.metric)
    if (!m) continue
    const key = `${rateOf(m[2]!)}\u0000${f.system}`
    if (!fromFigures.has(key)) fromFigures.set(key, [])
    fromFigures.get(key)!.push([f.value, Number(m[1])])
  }
  for (const [key, points] of fromFigures) {
    const [rate, system] = key.split('\u0000') as [string, string]
    if (out.get(Number(rate))?.has(system)) continue
    put(
      Number(rate),
      system,
      points.sort((a, b) => a[1] - b[1]),
    )
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
