/**
 * A real Prometheus (Debian package prometheus) scrapes a real `pgsched start` through the API's
 * GET /metrics with a bearer token, with otel/recording.yml and otel/alerts.yml loaded. After a
 * small workload over REST (successes, a failure that is retried and dead-lettered, a refused
 * submission, a per-second cron job, a job for later), the values read through Prometheus' HTTP
 * API match what the database says happened; every query of otel/grafana-dashboard.json returns
 * data; every rule is loaded and evaluates without error.
 */
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { setup, type TestBundle } from './helpers.ts'
import { freePort, type Service, startPgsched, startService, waitFor } from './processes.ts'

const INSTALL =
  'prometheus is missing: it comes with the Debian package prometheus ' +
  '(apt-get install -y --no-install-recommends prometheus; .ci/run installs it)'

/** What the dashboard's Grafana variables become in the queries sent here. */
const GRAFANA_VARIABLES: Record<string, string> = {
  // Prometheus has scraped every second for a few seconds only: a short window still holds
  // several samples of every series.
  __rate_interval: '20s',
  __interval: '5s',
  __range: '5m',
  queue: '.*',
}

let t: TestBundle
let pgsched: Service | undefined
let prometheus: Service | undefined
let api: string
let prom: string
let token: string
let dir: string

interface Sample {
  metric: Record<string, string>
  value: [number, string]
}

/** An instant query through Prometheus' HTTP API. */
async function query(expr: string): Promise<Sample[]> {
  const res = await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(expr)}`)
  const body = (await res.json()) as { status: string; error?: string; data: { result: Sample[] } }
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`)
  return body.data.result
}

/** The value of a query that gives one sample, or undefined when it gives none. */
async function value(expr: string): Promise<number | undefined> {
  const result = await query(expr)
  if (result.length > 1) throw new Error(`${expr}: ${result.length} samples, one expected`)
  return result[0] ? Number(result[0].value[1]) : undefined
}

/** Calls pgsched's REST API as the admin. */
// biome-ignore lint/suspicious/noExplicitAny: tests read response bodies by their documented shape
async function rest(method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${api}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

beforeAll(async () => {
  if (spawnSync('prometheus', ['--version']).error) throw new Error(INSTALL)
  t = await setup()
  const apiPort = await freePort()
  pgsched = await startPgsched('start', {
    DATABASE_URL: t.url,
    PGSCHED_JWT_SECRET: 'test-secret-that-is-long-enough-for-hs256',
    PORT: String(apiPort),
    PGSCHED_LOG_LEVEL: 'warn',
  })
  api = `http://127.0.0.1:${apiPort}`
  token = await t.token('admin', 'admin')

  dir = mkdtempSync(join(tmpdir(), 'pgsched-prometheus-'))
  chmodSync(dir, 0o755)
  writeFileSync(join(dir, 'token'), await t.token('prometheus', 'viewer'))
  // As otel/prometheus.yml, at a test's pace: scrape and evaluate every second.
  writeFileSync(
    join(dir, 'prometheus.yml'),
    JSON.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [resolve('otel/recording.yml'), resolve('otel/alerts.yml')],
      scrape_configs: [
        {
          job_name: 'pgsched',
          metrics_path: '/metrics',
          authorization: { type: 'Bearer', credentials_file: join(dir, 'token') },
          static_configs: [{ targets: [`127.0.0.1:${apiPort}`] }],
        },
      ],
    }),
  )
  const promPort = await freePort()
  prom = `http://127.0.0.1:${promPort}`
  prometheus = await startService(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ],
    {},
    'Server is ready to receive web requests',
    20_000,
    { failOnExit: true },
  )
}, 60_000)

afterAll(async () => {
  await Promise.all([prometheus?.stop(), pgsched?.stop()])
  await t?.close()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

/** Runs of `jobId` by status, from the database. */
async function runStatuses(jobId: number): Promise<string[]> {
  const rows = await t.sql<{ status: string }[]>`
    SELECT status FROM pgsched.runs WHERE job_id = ${jobId} ORDER BY id`
  return rows.map((r) => r.status)
}

describe('a real Prometheus scraping pgsched start', () => {
  /** What the database says happened, once the workload is over. */
  const facts = {
    reportsAttempts: 0,
    ticksAttempts: 0,
    cronRuns: 0,
    attemptsByOutcome: new Map<string, number>(),
  }

  beforeAll(async () => {
    // A job for later first: the leader counts the queue every 15 s, the rest runs meanwhile.
    const later = await rest('POST', '/v1/jobs', {
      name: 'later',
      command: 'true',
      queue: 'later',
      run_at: new Date(Date.now() + 3600_000).toISOString(),
    })
    expect(later.status, JSON.stringify(later.body)).toBe(201)
    const ok: number[] = []
    for (let i = 0; i < 3; i++) {
      const r = await rest('POST', '/v1/jobs', {
        name: `ok-${i}`,
        command: 'true',
        queue: 'reports',
      })
      expect(r.status, JSON.stringify(r.body)).toBe(201)
      ok.push(r.body.job_id)
    }
    // Fails twice: attempt 1 failed (a retry, at once), attempt 2 failed → dead.
    const failing = await rest('POST', '/v1/jobs', {
      name: 'failing',
      command: 'false',
      queue: 'reports',
      max_retries: 1,
      backoff_base_seconds: 0,
    })
    expect(failing.status, JSON.stringify(failing.body)).toBe(201)
    const cron = await rest('POST', '/v1/jobs', {
      name: 'every-second',
      command: 'true',
      queue: 'ticks',
      schedule: '* * * * * *',
    })
    expect(cron.status, JSON.stringify(cron.body)).toBe(201)
    const refused = await rest('POST', '/v1/jobs', { name: '', command: 'true' })
    expect(refused.status).toBe(400)

    for (const id of ok) {
      await waitFor(async () => (await runStatuses(id)).join() === 'succeeded', 20_000, `job ${id}`)
    }
    await waitFor(
      async () => (await runStatuses(failing.body.job_id)).join() === 'dead',
      20_000,
      'the failing job dead-lettered',
    )
    await waitFor(
      async () =>
        (await runStatuses(cron.body.job_id)).filter((s) => s === 'succeeded').length >= 3,
      20_000,
      'three cron runs',
    )
    // Paused, the job fires no more ticks and starts no more runs: the counts stand still.
    const paused = await rest('PATCH', `/v1/jobs/${cron.body.job_id}`, { status: 'paused' })
    expect(paused.status, JSON.stringify(paused.body)).toBe(200)
    await waitFor(
      async () => !(await runStatuses(cron.body.job_id)).includes('running'),
      20_000,
      'the last cron run to finish',
    )

    const attempts = await t.sql<{ queue: string; outcome: string; n: number }[]>`
      SELECT coalesce(j.queue, 'default') AS queue, a.outcome, count(*)::int AS n
      FROM pgsched.run_attempts a
      JOIN pgsched.runs r ON r.id = a.run_id
      JOIN pgsched.jobs j ON j.id = r.job_id
      GROUP BY 1, 2`
    for (const a of attempts) {
      if (a.queue === 'reports') facts.reportsAttempts += a.n
      if (a.queue === 'ticks') facts.ticksAttempts += a.n
      facts.attemptsByOutcome.set(a.outcome, (facts.attemptsByOutcome.get(a.outcome) ?? 0) + a.n)
    }
    facts.cronRuns = (await runStatuses(cron.body.job_id)).length

    // Until Prometheus has scraped the end of the workload, the leader has counted the queue
    // and the workers and read the degradation level (periodic passes of 15 s and 10 s), and
    // the recording rules have run over that.
    const expected: [string, number | 'any'][] = [
      ['sum(pgsched_queue_wait_count{queue="ticks"})', facts.ticksAttempts],
      ['sum(pgsched_ticks_fired_total)', facts.cronRuns],
      ['pgsched_queue_depth{status="queued",queue="later"}', 1],
      ['pgsched_workers{state="active"}', 1],
      ['pgsched_degradation_level', 'any'],
      ['pgsched:queue_backlog:sum', 'any'],
      ['pgsched:leaders:sum', 1],
    ]
    let seen: string[] = []
    await waitFor(
      async () => {
        seen = []
        for (const [expr, want] of expected) {
          const got = await value(expr)
          if (got === undefined || (want !== 'any' && got !== want))
            seen.push(`${expr} = ${got}, want ${want}`)
        }
        return seen.length === 0
      },
      40_000,
      () => `Prometheus to show the end of the workload; still:\n${seen.join('\n')}`,
    )
  }, 90_000)

  it('scrapes the API /metrics with the bearer token', async () => {
    const up = await query('up{job="pgsched"}')
    expect(up.map((s) => s.value[1])).toEqual(['1'])
    expect(
      await value('count(pgsched_submissions_total{otel_scope_name="pgsched"})'),
    ).toBeGreaterThan(0)
  })

  it('counts submissions accepted and refused', async () => {
    expect(await value('sum(pgsched_submissions_total{outcome="accepted"})')).toBe(6)
    expect(
      await value('sum(pgsched_submissions_total{outcome="refused",reason="validation"})'),
    ).toBe(1)
    expect(
      await value(
        'sum(http_server_request_duration_count{http_request_method="POST",http_route="/v1/jobs"})',
      ),
    ).toBe(7)
  })

  it('counts runs, attempts and dead letters as they happened', async () => {
    expect(
      await value('sum(pgsched_runs_finished_total{status="succeeded",queue="reports"})'),
    ).toBe(3)
    expect(await value('sum(pgsched_runs_finished_total{status="dead",queue="reports"})')).toBe(1)
    expect(await value('sum(pgsched_dead_letters_total{queue="reports"})')).toBe(1)
    expect(
      await value('sum(pgsched_attempts_finished_total{outcome="failed",queue="reports"})'),
    ).toBe(2)
    expect(
      await value('sum(pgsched_attempts_finished_total{outcome="succeeded",queue="reports"})'),
    ).toBe(3)
    for (const [outcome, n] of facts.attemptsByOutcome) {
      if (outcome === 'running') continue
      expect(
        await value(`sum(pgsched_attempts_finished_total{outcome="${outcome}"})`),
        outcome,
      ).toBe(n)
    }
    expect(await value('sum(pgsched_attempt_duration_count)')).toBe(
      await value('sum(pgsched_attempts_finished_total)'),
    )
  })

  it('records a queue wait for every attempt started', async () => {
    expect(await value('sum(pgsched_queue_wait_count{queue="reports"})')).toBe(
      facts.reportsAttempts,
    )
    expect(facts.reportsAttempts).toBe(5)
    expect(await value('sum(pgsched_queue_wait_count{queue="ticks"})')).toBe(facts.ticksAttempts)
    expect(await value('sum(pgsched_queue_wait_bucket{queue="reports",le="+Inf"})')).toBe(5)
    const bands = await query('sum by (priority_band) (pgsched_queue_wait_count)')
    expect(bands.map((s) => s.metric.priority_band)).toEqual(['normal'])
  })

  it('counts cron ticks fired, with their lateness', async () => {
    expect(facts.cronRuns).toBeGreaterThanOrEqual(3)
    expect(await value('sum(pgsched_ticks_fired_total)')).toBe(facts.cronRuns)
    expect(await value('sum(pgsched_tick_lateness_count)')).toBe(facts.cronRuns)
  })

  it('reports the leader, the worker slots and the workers', async () => {
    expect(await value('sum(pgsched_leading)')).toBe(1)
    expect(await value('sum(pgsched_leader_changes_total{change="acquired"})')).toBe(1)
    const total = await value('sum(pgsched_worker_slots_total)')
    expect(total).toBeGreaterThan(0)
    expect(await value('sum(pgsched_worker_slots_busy)')).toBeLessThanOrEqual(total!)
    expect(await value('pgsched_degradation_level')).toBe(0)
    expect(await value('pgsched_workers{state="active"}')).toBe(1)
    expect(await value('sum(pgsched_workers)')).toBe(1)
  })

  it('reports the queue depth the leader counted', async () => {
    expect(await value('pgsched_queue_depth{status="queued",queue="later"}')).toBe(1)
    expect(await value('sum(pgsched_queue_depth{status="dead"})')).toBe(1)
    expect(await value('pgsched:queue_backlog:sum')).toBeGreaterThanOrEqual(1)
  })

  it('answers every query of the Grafana dashboard with data', async () => {
    const dashboard = JSON.parse(readFileSync('otel/grafana-dashboard.json', 'utf8')) as {
      panels: { title: string; targets?: { expr: string; legendFormat?: string }[] }[]
      templating: { list: { name: string; definition: string }[] }
    }
    const empty: string[] = []
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        const expr = target.expr.replace(/\$(\w+)/g, (all, name: string) => {
          const v = GRAFANA_VARIABLES[name]
          if (v === undefined) throw new Error(`panel "${panel.title}": unknown variable ${all}`)
          return v
        })
        const result = await query(expr)
        if (result.length === 0)
          empty.push(`panel "${panel.title}" (${target.legendFormat}): ${expr}`)
      }
    }
    expect(empty, 'queries that returned no data').toEqual([])
    // The queue variable: label_values(metric, label).
    for (const v of dashboard.templating.list) {
      const [, metric, label] = /^label_values\((\w+), (\w+)\)$/.exec(v.definition) ?? []
      const res = await fetch(
        `${prom}/api/v1/label/${label}/values?match[]=${encodeURIComponent(metric!)}`,
      )
      const { data } = (await res.json()) as { data: string[] }
      expect(data, `variable ${v.name}`).toEqual(expect.arrayContaining(['reports', 'ticks']))
    }
  })

  it('loads every recording and alert rule, each evaluating without error', async () => {
    const expected = ['otel/recording.yml', 'otel/alerts.yml'].flatMap(
      (f) => readFileSync(f, 'utf8').match(/^ {6}- (record|alert): /gm) ?? [],
    ).length
    type Rule = { name: string; health: string; lastError?: string }
    const rules = await waitFor(
      async () => {
        const res = await fetch(`${prom}/api/v1/rules`)
        const { data } = (await res.json()) as { data: { groups: { rules: Rule[] }[] } }
        const all = data.groups.flatMap((g) => g.rules)
        return all.length === expected && all.every((r) => r.health !== 'unknown') && all
      },
      10_000,
      'every rule evaluated once',
    )
    expect(rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`)).toEqual(
      [],
    )
    // With one leader up, the leader alert stays silent; the success rate is computed.
    expect(await value('ALERTS{alertname="PgschedNoLeader"}')).toBeUndefined()
    expect(await value('pgsched:leaders:sum')).toBe(1)
  })
})
