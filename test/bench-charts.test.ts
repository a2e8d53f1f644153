/** The benchmark's charts: drawn from a small results object, well-formed, naming their series. */
import { describe, expect, it } from 'vitest'

import { charts, pickupDistributions } from '../bench/lib/charts.ts'
import type { Section } from '../bench/lib/context.ts'

const fig = (system: string, metric: string, value: number, unit: string) => ({
  system,
  metric,
  value,
  unit,
})

const SECTIONS: Section[] = [
  {
    id: 'submit',
    title: 'Submit <throughput> & REST',
    notes: [],
    figures: [
      fig('pgsched', 'batch submit, 1,000 jobs per call', 5000, 'jobs/s'),
      fig('graphile-worker', 'batch submit, 1,000 jobs per call', 50000, 'jobs/s'),
      // Alone in its group: compares nothing, so no bar.
      fig('pgsched', 'REST submit, 64 clients', 1600, 'jobs/s'),
      fig('pgsched', 'REST submit p99, 64 clients', 70, 'ms'),
    ],
  },
  {
    id: 'e2e',
    title: 'End to end',
    notes: [],
    figures: [
      fig(
        'pgsched',
        'spawn floor: `/bin/sh -c true` from a bare Node loop, concurrency 10',
        120,
        'spawns/s',
      ),
      fig('pgsched', 'drain `true` commands, concurrency 10, sandbox none', 90, 'runs/s'),
      fig('pgsched', 'drain `true` commands, concurrency 10, sandbox bwrap', 27, 'runs/s'),
    ],
  },
  {
    id: 'pickup',
    title: 'Pickup',
    notes: [],
    figures: [
      fig('pgsched', 'pickup p50 at 50 runs/s', 6, 'ms'),
      fig('pgsched', 'pickup p99 at 50 runs/s', 17, 'ms'),
      fig('graphile-worker', 'pickup p50 at 50 runs/s', 0, 'ms'),
      fig('graphile-worker', 'pickup p99 at 50 runs/s', 13, 'ms'),
      // Full distributions for 1,000/s, on the p50 figures: these win over the other figures.
      {
        ...fig('pgsched', 'pickup p50 at 1,000 runs/s', 51, 'ms'),
        percentiles: Array.from({ length: 101 }, (_, i) => 1 + i),
      },
      fig('pgsched', 'pickup p99 at 1,000 runs/s', 100, 'ms'),
      {
        ...fig('graphile-worker', 'pickup p50 at 1,000 runs/s', 25.5, 'ms'),
        percentiles: Array.from({ length: 101 }, (_, i) => 0.5 + i / 2),
      },
    ],
  },
  {
    id: 'history',
    title: 'History',
    notes: [],
    figures: [],
    curves: [
      {
        name: 'GET /v1/jobs/{id}/runs p50',
        xUnit: 'runs of history',
        unit: 'ms',
        points: [
          [0, 2],
          [3_000_000, 2.2],
          [10_000_000, 2.3],
        ],
      },
      { name: 'submit p50', xUnit: 'runs of history', unit: 'ms', points: [[0, 3]] },
    ],
  },
  // What a slow workload leaves: no figures, no chart.
  { id: 'cron', title: 'Workload cron: slow', notes: [], figures: [], slow: 'slow' },
]

/** Tags balanced, attributes quoted, no bare < or & in text or attributes. */
function wellFormed(svg: string): void {
  const stack: string[] = []
  const attr = String.raw`\s+[\w:-]+="(?:[^"<&]|&(?:amp|lt|gt|quot);)*"`
  const open = new RegExp(String.raw`^<([\w:-]+)(?:${attr})*\s*(/?)>$`)
  for (const token of svg.match(/<[^>]*>|[^<]+/g) ?? []) {
    if (token.startsWith('</')) {
      expect(stack.pop(), token).toBe(token.slice(2, -1))
    } else if (token.startsWith('<')) {
      const m = open.exec(token)
      expect(m, token).not.toBeNull()
      if (!m![2]) stack.push(m![1]!)
    } else {
      expect(token.replace(/&(?:amp|lt|gt|quot);/g, ''), token).not.toMatch(/[<&]/)
    }
  }
  expect(stack).toEqual([])
  expect(svg.trimStart().startsWith('<svg')).toBe(true)
}

describe('bench charts', () => {
  const drawn = charts(SECTIONS)
  const byFile = new Map(drawn.map((c) => [c.file, c]))

  it('draws pickup per rate, throughput per workload with baselines, history curves', () => {
    expect([...byFile.keys()].sort()).toEqual([
      'history.svg',
      'pickup-1000.svg',
      'pickup-50.svg',
      'throughput-e2e.svg',
      'throughput-submit.svg',
    ])
  })

  it('writes well-formed SVG naming every series', () => {
    for (const c of drawn) wellFormed(c.svg)
    for (const f of ['pickup-50.svg', 'pickup-1000.svg']) {
      expect(byFile.get(f)!.svg).toContain('>pgsched<')
      expect(byFile.get(f)!.svg).toContain('>graphile-worker<')
    }
    const submit = byFile.get('throughput-submit.svg')!.svg
    expect(submit).toContain('Submit &lt;throughput&gt; &amp; REST')
    expect(submit).toContain('>graphile-worker<')
    expect(submit).not.toContain('REST submit, 64 clients')
    const e2e = byFile.get('throughput-e2e.svg')!.svg
    expect(e2e).toContain('>spawn floor<')
    expect(e2e).toContain('>pgsched, sandbox bwrap<')
    const history = byFile.get('history.svg')!.svg
    expect(history).toContain('GET /v1/jobs/{id}/runs p50')
    expect(history).toContain('>submit p50<')
  })

  it('prefers full distributions over the percentile figures', () => {
    const d = pickupDistributions(SECTIONS[2]!)
    expect(d.get(1000)!.get('pgsched')).toHaveLength(101)
    expect(d.get(50)!.get('pgsched')).toEqual([
      [6, 50],
      [17, 99],
    ])
  })

  it('skips what is missing', () => {
    expect(charts([])).toEqual([])
    expect(charts([{ id: 'pickup', title: 'Pickup', notes: [], figures: [] }])).toEqual([])
  })
})
