/**
 * @module
 * A drill's timeline as a hand-written SVG: time on x; rows for submissions accepted (up) and
 * refused (down) per second, the slowest REST answer, cron ticks fired, runs finished, and the
 * leader and the primary as coloured bands with their names; the drill's marks (fault,
 * recovered, ...) as labelled vertical lines across every row.
 */
import type { DrillResult, Mark, TimelineSecond } from './types.ts'

/** Width of the row labels on the left, px. */
const LABEL_W = 170
/** Plot width bounds, px: a short drill still gets room, a long one stays readable on a screen. */
const PLOT_MIN_W = 640
const PLOT_MAX_W = 1500
const PX_PER_SECOND = 8
/** Room above the rows for the marks' labels, px. */
const TOP = 64

const COLOURS = {
  accepted: '#2e8b57',
  refused: '#d62728',
  answer: '#ff7f0e',
  tick: '#1f77b4',
  missed: '#f4c7c3',
  finished: '#7b4fa0',
  none: '#dddddd',
  grid: '#e6e6e6',
  text: '#222222',
  fault: '#d62728',
  recovered: '#2e8b57',
  mark: '#666666',
}

/** Band colours for leaders and primaries, given out in order of appearance. */
const BANDS = [
  '#8dd3c7',
  '#bebada',
  '#fb8072',
  '#80b1d3',
  '#fdb462',
  '#b3de69',
  '#fccde5',
  '#bc80bd',
]

/** The SVG text of `result`'s timeline (from its checks, where ticks and runs finished are filled in). */
export function timelineSvg(result: DrillResult): string {
  const tl = result.checks.timeline
  const rows = tl.seconds
  const n = Math.max(rows.length, 1)
  const plotW = Math.min(PLOT_MAX_W, Math.max(PLOT_MIN_W, n * PX_PER_SECOND))
  const px = plotW / n
  const t0 = rows[0]?.second ?? Math.floor(tl.start / 1000)
  const xOf = (ms: number) => LABEL_W + ((ms / 1000 - t0) / n) * plotW
  const out: string[] = []
  let y = TOP

  const rowFrame = (label: string, h: number, sub?: string) => {
    out.push(
      `<rect x="${LABEL_W}" y="${y}" width="${plotW}" height="${h}" fill="#fafafa" stroke="${COLOURS.grid}"/>`,
      text(LABEL_W - 8, y + h / 2 - (sub ? 3 : -4), label, { anchor: 'end', weight: 'bold' }),
    )
    if (sub) out.push(text(LABEL_W - 8, y + h / 2 + 11, sub, { anchor: 'end', size: 10 }))
  }

  // Submissions: accepted up from the middle line, refused down from it.
  {
    const h = 110
    const max = Math.max(1, ...rows.map((r) => Math.max(r.accepted, r.refused)))
    rowFrame('submissions / s', h, `accepted ↑ refused ↓ (max ${max})`)
    const mid = y + h / 2
    for (const [i, r] of rows.entries()) {
      const x = LABEL_W + i * px
      if (r.accepted) bar(out, x, mid, px, (r.accepted / max) * (h / 2 - 4), COLOURS.accepted, 'up')
      if (r.refused) bar(out, x, mid, px, (r.refused / max) * (h / 2 - 4), COLOURS.refused, 'down')
    }
    out.push(line(LABEL_W, mid, LABEL_W + plotW, mid, '#999999'))
    y += h + 8
  }
  // The slowest REST answer of each second.
  {
    const h = 56
    const max = Math.max(100, ...rows.map((r) => r.answerMsMax ?? 0))
    rowFrame('slowest answer', h, `REST, ms (max ${Math.round(max)})`)
    for (const [i, r] of rows.entries()) {
      if (r.answerMsMax === null) continue
      bar(
        out,
        LABEL_W + i * px,
        y + h,
        px,
        Math.max(1, (r.answerMsMax / max) * (h - 4)),
        COLOURS.answer,
        'up',
      )
    }
    y += h + 8
  }
  // Cron ticks: one per second; a missed second shaded, a doubled one red.
  {
    const h = 34
    rowFrame('cron ticks / s', h, 'missed shaded, 2+ red')
    const from = tl.cronCreatedAt ? Math.ceil(tl.cronCreatedAt / 1000) + 1 : t0
    for (const [i, r] of rows.entries()) {
      const x = LABEL_W + i * px
      const ticks = r.ticks ?? 0
      if (ticks === 0 && r.second >= from && r.second < Math.floor(tl.end / 1000)) {
        out.push(rect(x, y + 1, px, h - 2, COLOURS.missed))
      } else if (ticks > 0) {
        out.push(
          rect(x + px * 0.15, y + 6, px * 0.7, h - 12, ticks > 1 ? COLOURS.refused : COLOURS.tick),
        )
      }
    }
    y += h + 8
  }
  // Runs finished.
  {
    const h = 70
    const max = Math.max(1, ...rows.map((r) => r.runsFinished ?? 0))
    rowFrame('runs finished / s', h, `all workload jobs (max ${max})`)
    for (const [i, r] of rows.entries()) {
      if (r.runsFinished)
        bar(
          out,
          LABEL_W + i * px,
          y + h,
          px,
          (r.runsFinished / max) * (h - 4),
          COLOURS.finished,
          'up',
        )
    }
    y += h + 8
  }
  // Leader and primary bands.
  const palette = new Map<string, string>()
  for (const key of ['leader', 'primary'] as const) {
    const h = 26
    rowFrame(key, h)
    for (const band of bands(rows, key)) {
      const x = LABEL_W + band.from * px
      const w = (band.to - band.from) * px
      let fill = COLOURS.none
      if (band.name !== null) {
        if (!palette.has(band.name)) palette.set(band.name, BANDS[palette.size % BANDS.length]!)
        fill = palette.get(band.name)!
      }
      out.push(
        `<rect x="${f(x)}" y="${y + 1}" width="${f(w)}" height="${h - 2}" fill="${fill}"><title>${esc(band.name ?? 'none')}</title></rect>`,
      )
      const label = band.name ?? 'none'
      if (w > label.length * 6.2 + 6)
        out.push(text(x + w / 2, y + h / 2 + 4, label, { anchor: 'middle', size: 11 }))
    }
    y += h + 8
  }

  // Time axis: seconds since the workload began.
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300].find((s) => (s * plotW) / n >= 60) ?? 600
  for (let s = 0; s <= n; s += step) {
    const x = LABEL_W + s * px
    out.push(
      line(x, TOP, x, y, COLOURS.grid),
      text(x, y + 14, `${s}s`, { anchor: 'middle', size: 10 }),
    )
  }
  out.push(
    text(
      LABEL_W + plotW,
      y + 30,
      `seconds since ${new Date(t0 * 1000).toISOString().replace('.000Z', 'Z')}`,
      {
        anchor: 'end',
        size: 10,
      },
    ),
  )

  // Marks across every row, labels staggered so close marks stay readable.
  const marks = [...tl.marks].sort((a, b) => a.at - b.at)
  const lanes: number[] = []
  for (const m of marks) {
    const x = xOf(m.at)
    const lane = laneFor(lanes, x, m.label.length * 6.5 + 10)
    const colour = markColour(m)
    out.push(
      `<line x1="${f(x)}" y1="${TOP - 4 - lane * 15}" x2="${f(x)}" y2="${y}" stroke="${colour}" stroke-width="2" stroke-dasharray="6 3" class="mark" data-label="${esc(m.label)}"/>`,
      text(x + 3, TOP - 8 - lane * 15, m.label, { size: 11, colour, weight: 'bold' }),
    )
  }

  const status = result.checks.passed ? 'all checks passed' : 'CHECKS FAILED'
  const width = LABEL_W + plotW + 20
  const height = y + 44
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f(width)}" height="${height}" viewBox="0 0 ${f(width)} ${height}" font-family="sans-serif">`,
    `<title>${esc(`drill ${result.number} ${result.drill}: ${result.fault}`)}</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    text(10, 18, `drill ${result.number} · ${result.drill} — ${result.fault}`, {
      size: 14,
      weight: 'bold',
    }),
    text(10, 34, status, {
      size: 12,
      colour: result.checks.passed ? COLOURS.accepted : COLOURS.refused,
      weight: 'bold',
    }),
    ...out,
    '</svg>',
    '',
  ].join('\n')
}

/** Runs of equal `key` over the seconds, as [from, to) indexes. */
function bands(rows: TimelineSecond[], key: 'leader' | 'primary') {
  const out: { from: number; to: number; name: string | null }[] = []
  for (const [i, r] of rows.entries()) {
    const last = out.at(-1)
    if (last && last.name === r[key]) last.to = i + 1
    else out.push({ from: i, to: i + 1, name: r[key] })
  }
  return out
}

/** The first label lane at `x` free of the labels already placed (lanes hold their right ends). */
function laneFor(lanes: number[], x: number, w: number): number {
  let lane = lanes.findIndex((right) => right < x)
  if (lane === -1) lane = lanes.length
  if (lane > 2) lane = 2
  lanes[lane] = x + w
  return lane
}

function markColour(m: Mark): string {
  if (/fault|kill|partition|destroy|stop/i.test(m.label)) return COLOURS.fault
  if (/recover|heal|restor|start/i.test(m.label)) return COLOURS.recovered
  return COLOURS.mark
}

function bar(
  out: string[],
  x: number,
  base: number,
  w: number,
  h: number,
  fill: string,
  dir: 'up' | 'down',
) {
  out.push(
    rect(
      x + Math.min(1, w * 0.1),
      dir === 'up' ? base - h : base,
      Math.max(1, w - Math.min(2, w * 0.2)),
      h,
      fill,
    ),
  )
}

function rect(x: number, y: number, w: number, h: number, fill: string): string {
  return `<rect x="${f(x)}" y="${f(y)}" width="${f(w)}" height="${f(h)}" fill="${fill}"/>`
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string): string {
  return `<line x1="${f(x1)}" y1="${f(y1)}" x2="${f(x2)}" y2="${f(y2)}" stroke="${stroke}"/>`
}

function text(
  x: number,
  y: number,
  s: string,
  o: { anchor?: 'start' | 'middle' | 'end'; size?: number; weight?: string; colour?: string } = {},
): string {
  return `<text x="${f(x)}" y="${f(y)}" font-size="${o.size ?? 12}" fill="${o.colour ?? COLOURS.text}"${o.anchor ? ` text-anchor="${o.anchor}"` : ''}${o.weight ? ` font-weight="${o.weight}"` : ''}>${esc(s)}</text>`
}

/** A coordinate with at most one decimal. */
function f(v: number): string {
  return String(Math.round(v * 10) / 10)
}

/** `s` escaped for XML text and attributes. */
export function esc(s: string): string {
  return s.replace(
    /[<>&"']/g,
    (c) => `&${{ '<': 'lt', '>': 'gt', '&': 'amp', '"': 'quot', "'": 'apos' }[c]};`,
  )
}
