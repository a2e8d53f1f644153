/**
 * @module
 * The drills' report: `REPORT.md` (the machine and versions, a summary table, then per drill the
 * fault, the figures, every check and its timeline image), `report.json` (the same, whole) and
 * one `timeline-<drill>.svg` per drill, all written into one folder.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, release, totalmem } from 'node:os'
import { join } from 'node:path'

import { timelineSvg } from './svg.ts'
import type { DrillResult, Figures } from './types.ts'

/** The machine a report was made on, and the versions of everything in the stack. */
export interface Machine {
  cores: number
  cpu: string
  memoryGiB: number
  kernel: string
  versions: Record<string, string>
}

/** How the run was made, for the report's header. */
export interface ReportMeta {
  /** The command, e.g. `npm run chaos -- all --quick`. */
  command?: string
  quick?: boolean
  /** Paragraphs added under the header (e.g. which paths ran where). */
  notes?: string[]
}

/** What `writeReport` found: whether every drill passed, and one line per broken invariant. */
export interface ReportOutcome {
  passed: boolean
  failures: string[]
}

/** Where the stack's binaries are: the system PostgreSQL 15 is not on PATH. */
const VERSION_COMMANDS: Record<string, [string, string[]]> = {
  PostgreSQL: ['/usr/lib/postgresql/15/bin/postgres', ['--version']],
  Patroni: ['patroni', ['--version']],
  etcd: ['etcd', ['--version']],
  HAProxy: ['haproxy', ['-v']],
  pgBackRest: ['pgbackrest', ['version']],
}

/** Writes REPORT.md, report.json and the timelines of `results` into `folder`; returns the failures. */
export function writeReport(
  results: DrillResult[],
  folder: string,
  meta: ReportMeta = {},
): ReportOutcome {
  mkdirSync(folder, { recursive: true })
  const machine = describeMachine()
  const outcome: ReportOutcome = { passed: true, failures: failures(results) }
  outcome.passed = outcome.failures.length === 0
  for (const r of results) writeFileSync(join(folder, svgName(r)), timelineSvg(r))
  writeFileSync(
    join(folder, 'report.json'),
    `${JSON.stringify({ generatedAt: new Date().toISOString(), meta, machine, passed: outcome.passed, results }, null, 2)}\n`,
  )
  writeFileSync(join(folder, 'REPORT.md'), markdown(results, machine, meta, outcome))
  return outcome
}

/** One line per failed check or failed drill: what was lost, duplicated or broken, by id. */
export function failures(results: DrillResult[]): string[] {
  return results.flatMap((r) => [
    ...(r.error ? [`drill ${r.number} ${r.drill}: did not complete: ${r.error}`] : []),
    ...r.checks.checks
      .filter((c) => !c.passed)
      .map((c) => `drill ${r.number} ${r.drill}: ${c.name}: ${c.details}`),
  ])
}

/** The machine's cores, memory, kernel and the stack's versions (`not installed` when missing). */
export function describeMachine(): Machine {
  const versions: Record<string, string> = { node: process.version, pgsched: pgschedVersion() }
  for (const [name, [cmd, args]] of Object.entries(VERSION_COMMANDS)) {
    try {
      const out = execFileSync(cmd, args, {
        encoding: 'utf8',
        timeout: 10_000,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      versions[name] =
        out
          .split('\n')
          .find((l) => l.trim())
          ?.trim() ?? 'unknown'
    } catch {
      versions[name] = 'not installed'
    }
  }
  const cpu = cpus()
  return {
    cores: cpu.length,
    cpu: cpu[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    versions,
  }
}

function pgschedVersion(): string {
  let version = 'unknown'
  try {
    version = (
      JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
        version: string
      }
    ).version
  } catch {
    // reported as unknown
  }
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
      timeout: 5_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim()
    return `${version} (${commit})`
  } catch {
    return version
  }
}

function svgName(r: DrillResult): string {
  return `timeline-${r.drill}.svg`
}

function markdown(
  results: DrillResult[],
  machine: Machine,
  meta: ReportMeta,
  outcome: ReportOutcome,
): string {
  const md: string[] = [
    '# pgsched chaos and disaster-recovery drills',
    '',
    `Generated ${new Date().toISOString()}${meta.command ? ` by \`${meta.command}\`` : ''}${meta.quick ? ' (quick: shortened drills)' : ''}. ` +
      `${outcome.passed ? '**Every invariant held.**' : `**${outcome.failures.length} invariants broke** (listed under each drill).`}`,
    '',
    ...(meta.notes ?? []).flatMap((n) => [n, '']),
    '## Machine',
    '',
    `${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB memory, Linux ${machine.kernel}.`,
    '',
    '| software | version |',
    '| --- | --- |',
    ...Object.entries(machine.versions).map(([k, v]) => `| ${k} | ${cell(v)} |`),
    '',
    '## Summary',
    '',
    'RTOs: submissions = first refused submission → first accepted again; scheduler = last cron tick fired before the fault → first after; execution = last run finished before → first after (the longest such gap across the fault window). RPO = acknowledged jobs lost.',
    '',
    '| # | drill | fault | checks | RTO submissions | RTO scheduler | RTO execution | RPO | duplicates | slowest answer while down |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...results.map((r) => {
      const f = r.checks.figures
      const passed = r.checks.checks.filter((c) => c.passed).length
      const verdict = r.error
        ? 'error'
        : `${passed}/${r.checks.checks.length}${r.checks.passed ? '' : ' ❌'}`
      return `| ${r.number} | [${r.drill}](#${anchor(r)}) | ${cell(r.fault)} | ${verdict} | ${ms(f.rtoSubmissionsMs)} | ${ms(f.rtoSchedulerMs)} | ${ms(f.rtoExecutionMs)} | ${f.rpoJobsLost} | ${f.duplicates} | ${ms(f.slowestAnswerDownMs)} |`
    }),
    '',
  ]
  for (const r of results) md.push(...drillSection(r))
  return `${md.join('\n')}\n`
}

function drillSection(r: DrillResult): string[] {
  const f = r.checks.figures
  const faultFor = r.windows.recovered - r.windows.faultStart
  return [
    `## Drill ${r.number}: ${r.drill}`,
    '',
    `**Fault:** ${r.fault}. Fault at ${iso(r.windows.faultStart)}, recovered at ${iso(r.windows.recovered)} (${ms(faultFor)} later).`,
    ...(r.error ? ['', `**The drill did not complete:** ${r.error}`] : []),
    '',
    '| figure | value |',
    '| --- | --- |',
    ...figureRows(f).map(([k, v]) => `| ${k} | ${v} |`),
    '',
    '| check | result | details |',
    '| --- | --- | --- |',
    ...r.checks.checks.map(
      (c) => `| ${c.name} | ${c.passed ? '✅ pass' : '❌ FAIL'} | ${cell(c.details)} |`,
    ),
    '',
    ...(r.notes?.length ? [...r.notes.map((n) => `- ${n}`), ''] : []),
    `![timeline of drill ${r.number} ${r.drill}](${svgName(r)})`,
    '',
  ]
}

function figureRows(f: Figures): [string, string][] {
  return [
    ['RTO submissions (first refused → first accepted again)', ms(f.rtoSubmissionsMs)],
    ['RTO scheduler (last tick before → first tick after)', ms(f.rtoSchedulerMs)],
    ['RTO execution (last run finished before → first after)', ms(f.rtoExecutionMs)],
    ['RPO (acknowledged jobs lost)', String(f.rpoJobsLost)],
    ['duplicates (occurrences run twice, overlapping attempts)', String(f.duplicates)],
    ['slowest REST answer while down', ms(f.slowestAnswerDownMs)],
    ['submissions acknowledged / refused', `${f.acknowledged} / ${f.refused}`],
    ['cron ticks missed in the fault window', String(f.ticksMissed)],
  ]
}

/** A duration for people: `—` when not applicable, ms under a second, else seconds. */
function ms(v: number | null): string {
  if (v === null) return '—'
  return v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`
}

function iso(t: number): string {
  return new Date(t).toISOString()
}

/** GitHub's heading anchor for a drill's section. */
function anchor(r: DrillResult): string {
  return `drill-${r.number}-${r.drill}`
    .toLowerCase()
    .replace(/[^a-z0-9 -]/g, '')
    .replace(/ /g, '-')
}

/** Text safe inside a Markdown table cell. */
function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ')
}
