/**
 * @module Hand-written SVG for the benchmark's charts: line charts (linear or log x axis) and
 * grouped horizontal bars. No dependency; every text is escaped, every number rounded.
 */

/** One line of a line chart: points as [x, y]. */
export interface Line {
  name: string
  points: [number, number][]
}

/** One group of bars, each bar a named value; each group has its own scale. */
export interface BarGroup {
  name: string
  bars: { name: string; value: number; label?: string }[]
}

/** Axes and title of a line chart. */
export interface LineChartSpec {
  title: string
  x: { label: string; log?: boolean; format?: (v: number) => string }
  y: { label: string; min?: number; max?: number; format?: (v: number) => string }
  lines: Line[]
  /** Where the legend goes inside the plot, away from the lines (default top left). */
  legend?: 'top-left' | 'bottom-right'
}

const FONT = 'font-family="sans-serif" font-size="12"'
/** Fixed colours for the systems, so that a system looks the same in every chart. */
const KNOWN: Record<string, string> = {
  pgsched: '#1f77b4',
  'graphile-worker': '#ff7f0e',
  'pg-boss': '#2ca02c',
}
const PALETTE = ['#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf', '#bcbd22']

/** The colour of series `name`, the i-th of its chart. */
export function colour(name: string, i: number): string {
  return KNOWN[name] ?? PALETTE[i % PALETTE.length]!
}

export function escapeXml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
}

const r1 = (v: number) => Math.round(v * 10) / 10

/** A number as axis labels show it: 1.5k, 2M, 0.25. */
export function short(v: number): string {
  const a = Math.abs(v)
  if (a >= 1e6) return `${r1(v / 1e6)}M`
  if (a >= 1e4) return `${r1(v / 1e3)}k`
  if (a >= 100) return String(Math.round(v))
  if (a >= 1) return String(r1(v))
  return String(Math.round(v * 1000) / 1000)
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${r1(x)}" y="${r1(y)}" ${FONT} ${attrs}>${escapeXml(s)}</text>`
}

function svg(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    text(width / 2, 22, title, 'text-anchor="middle" font-weight="bold"'),
    ...body,
    '</svg>',
    '',
  ].join('\n')
}

/** About five round ticks, the first at or below `lo`, the last at or above `hi`. */
function linearTicks(lo: number, hi: number): number[] {
  const span = hi - lo || Math.abs(hi) || 1
  const raw = span / 5
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!
  const first = Math.floor(lo / step + 1e-9)
  const last = Math.max(first + 1, Math.ceil(hi / step - 1e-9))
  return Array.from({ length: last - first + 1 }, (_, i) => (first + i) * step)
}

/** A line chart; points with a non-finite coordinate (or ≤ 0 on a log axis) are left out. */
export function lineChart(spec: LineChartSpec): string {
  const W = 720
  const H = 380
  const m = { left: 70, right: 20, top: 40, bottom: 56 }
  const pw = W - m.left - m.right
  const ph = H - m.top - m.bottom
  const logX = spec.x.log ?? false
  const lines = spec.lines.map((l) => ({
    ...l,
    points: l.points.filter(
      ([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logX || x > 0),
    ),
  }))
  const xs = lines.flatMap((l) => l.points.map((p) => p[0]))
  const ys = lines.flatMap((l) => l.points.map((p) => p[1]))
  if (xs.length === 0) return svg(W, H, spec.title, [text(W / 2, H / 2, 'no data')])
  let x0: number
  let x1: number
  let xTicks: number[]
  if (logX) {
    x0 = 10 ** Math.floor(Math.log10(Math.min(...xs)))
    x1 = 10 ** Math.ceil(Math.log10(Math.max(...xs)))
    if (x1 <= x0) x1 = x0 * 10
    xTicks = []
    for (let t = x0; t <= x1 * 1.0001; t *= 10) xTicks.push(t)
  } else {
    xTicks = linearTicks(Math.min(0, ...xs), Math.max(...xs))
    x0 = xTicks[0]!
    x1 = xTicks.at(-1)!
  }
  const yTicks = linearTicks(spec.y.min ?? Math.min(0, ...ys), spec.y.max ?? Math.max(...ys))
  const y0 = spec.y.min ?? yTicks[0]!
  const y1 = spec.y.max ?? yTicks.at(-1)!
  const px = (x: number) =>
    m.left + (logX ? Math.log10(x / x0) / Math.log10(x1 / x0) : (x - x0) / (x1 - x0)) * pw
  const py = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph
  const fx = spec.x.format ?? short
  const fy = spec.y.format ?? short
  const body: string[] = []
  for (const t of xTicks) {
    body.push(
      `<line x1="${r1(px(t))}" y1="${m.top}" x2="${r1(px(t))}" y2="${m.top + ph}" stroke="#e0e0e0"/>`,
      text(px(t), m.top + ph + 16, fx(t), 'text-anchor="middle"'),
    )
  }
  for (const t of yTicks.filter((t) => t >= y0 && t <= y1)) {
    body.push(
      `<line x1="${m.left}" y1="${r1(py(t))}" x2="${m.left + pw}" y2="${r1(py(t))}" stroke="#e0e0e0"/>`,
      text(m.left - 6, py(t) + 4, fy(t), 'text-anchor="end"'),
    )
  }
  body.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#888888"/>`,
    text(m.left + pw / 2, H - 12, spec.x.label, 'text-anchor="middle"'),
    text(
      16,
      m.top + ph / 2,
      spec.y.label,
      `text-anchor="middle" transform="rotate(-90 16 ${r1(m.top + ph / 2)})"`,
    ),
  )
  lines.forEach((l, i) => {
    const c = colour(l.name, i)
    const pts = l.points.map(([x, y]) => `${r1(px(x))},${r1(py(y))}`)
    if (pts.length > 1) {
      body.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${c}" stroke-width="2"/>`)
    }
    // Markers when the line has few points: they are all the data there is.
    if (l.points.length <= 12) {
      for (const p of pts) {
        const [cx, cy] = p.split(',')
        body.push(`<circle cx="${cx}" cy="${cy}" r="3.5" fill="${c}"/>`)
      }
    }
    const right = spec.legend === 'bottom-right'
    const ly = right ? m.top + ph - 10 - (lines.length - 1 - i) * 18 : m.top + 16 + i * 18
    const lx = right ? m.left + pw - 190 : m.left + 10
    body.push(
      `<rect x="${lx}" y="${ly - 9}" width="14" height="10" fill="${c}"/>`,
      text(lx + 20, ly, l.name),
    )
  })
  return svg(W, H, spec.title, body)
}

/** Horizontal bars, one block per group, each group scaled to its own largest bar. */
export function barChart(title: string, note: string, groups: BarGroup[]): string {
  const W = 760
  const labelW = 230
  const valueW = 110
  const barH = 16
  const gap = 4
  const barW = W - labelW - valueW - 20
  const names = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.name)))]
  const body: string[] = [text(W / 2, 40, note, 'text-anchor="middle" fill="#555555"')]
  let y = 62
  for (const g of groups) {
    body.push(text(10, y + 12, g.name, 'font-weight="bold"'))
    y += 20
    const max = Math.max(...g.bars.map((b) => b.value).filter(Number.isFinite), 0)
    for (const b of g.bars) {
      const w = max > 0 && Number.isFinite(b.value) ? (b.value / max) * barW : 0
      body.push(
        text(labelW - 6, y + barH - 4, b.name, 'text-anchor="end"'),
        `<rect x="${labelW}" y="${y}" width="${r1(Math.max(w, 0))}" height="${barH}" fill="${colour(b.name, names.indexOf(b.name))}"/>`,
        text(labelW + w + 6, y + barH - 4, b.label ?? short(b.value)),
      )
      y += barH + gap
    }
    y += 12
  }
  return svg(W, y + 10, title, body)
}
