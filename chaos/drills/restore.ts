/**
 * @module
 * Drill 8, disaster recovery: a pgBackRest full backup and WAL archive while the workload runs, a
 * point in time chosen, the cluster destroyed (pgsched stopped, both Patroni nodes stopped and
 * their data deleted), a point-in-time restore into a fresh standalone PostgreSQL 15, and pgsched
 * started on it. Every job acknowledged before the point must exist after the restore (and
 * succeed); the report says which acknowledged after the point exist too.
 */
import { rmSync } from 'node:fs'

import postgres from 'postgres'

import { Pgsched } from '../infra/pgsched.ts'
import { say, sleep } from '../infra/supervisor.ts'
import { checkInvariants } from '../observe/invariants.ts'
import type { DrillChecks, DrillResult } from '../observe/types.ts'
import { startWorkload } from '../observe/workload.ts'
import { type DrillContext, phases } from './drill.ts'

/** Backs up, destroys and restores the cluster to a point in time; starts pgsched on it. */
export async function restore(ctx: DrillContext): Promise<DrillResult> {
  const { stack } = ctx
  const p = phases(ctx.quick)
  const tag = 'drill 8 restore'
  const notes: string[] = []
  const target = await stack.pgsched.target()
  say(`${tag}: workload`)
  const w = await startWorkload(target, stack.probes, { quick: ctx.quick })
  let faultStart = 0
  let recovered = 0
  let point = 0
  let restoredUrl = ''
  let restoredApi: Awaited<ReturnType<Pgsched['target']>> | undefined
  let error: string | undefined
  try {
    await sleep(p.warmupMs)
    say(`${tag}: full backup while the workload runs`)
    const t = Date.now()
    await stack.backrest.backup()
    notes.push(`full backup under load took ${Date.now() - t} ms`)
    await sleep(p.warmupMs / 2)
    point = Date.now()
    w.mark('point in time')
    say(`${tag}: point in time ${new Date(point).toISOString()}`)
    await sleep(p.warmupMs / 2)
    // A WAL switch and wait until archived: the archive covers the point and beyond.
    await stack.backrest.flushArchive()
    await w.stop()
    faultStart = Date.now()
    w.mark('fault')
    say(`${tag}: fault: destroying the cluster (pgsched, both Patroni nodes, their data)`)
    for (const name of stack.pgsched.processes.keys()) await stack.pgsched.stop(name)
    for (const n of stack.cluster.nodes) await stack.cluster.stopNode(n.name)
    for (const n of stack.cluster.nodes) {
      const pid = stack.cluster.postmasterPid(n.name)
      if (pid) stack.sv.kill(pid, 'SIGKILL')
      rmSync(n.dataDir, { recursive: true, force: true })
    }
    say(`${tag}: restoring to the point in time`)
    const t2 = Date.now()
    const restored = await stack.backrest.restore(new Date(point))
    notes.push(
      `restore and recovery to the point took ${Date.now() - t2} ms (port ${restored.port})`,
    )
    const pg = new Pgsched(stack.sv, {
      port: restored.port,
      superPassword: stack.cluster.superPassword,
      root: stack.root,
    })
    await pg.prepare()
    await Promise.all([pg.add('restored-api', 'api'), pg.add('restored-worker', 'worker')])
    await pg.add('restored-scheduler', 'scheduler')
    restoredUrl = pg.adminUrl()
    recovered = Date.now()
    w.mark('recovered')
    say(
      `${tag}: pgsched runs on the restored cluster ${((recovered - faultStart) / 1000).toFixed(1)} s after the destruction`,
    )
    restoredApi = await pg.target()
  } catch (e) {
    error = e instanceof Error ? e.message : String(e)
    say(`${tag}: FAILED: ${error}`)
    await w.stop()
    recovered ||= Date.now()
  }
  let checks: DrillChecks | undefined
  if (restoredUrl) {
    say(`${tag}: checks`)
    try {
      checks = await checkInvariants(
        restoredUrl,
        w,
        { faultStart, recovered },
        {
          pointInTime: point,
          // The timeline goes on past the point; the restored cluster does not: cron seconds after
          // the point never fired there, and the old workers are declared dead on it by design.
          skip: ['cron-live-windows-fired', 'cron-catch-up-once', 'no-worker-dead-outside-fault'],
        },
      )
      notes.push(...(await compare(restoredUrl, w.acknowledged(), point)))
      // Only after the checks: the restored sequence hands out again the ids of the jobs made
      // after the point, so a new job would pass for one of them (it did, in the first full run).
      const r = await fetch(`${restoredApi!.apiUrl}/v1/jobs`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${restoredApi!.token}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ name: 'after-restore', command: 'true' }),
      })
      notes.push(`a submission to the restored pgsched: HTTP ${r.status}`)
      await r.arrayBuffer()
    } catch (e) {
      error ??= `checks: ${e instanceof Error ? e.message : String(e)}`
    }
  }
  checks ??= {
    passed: false,
    checks: [],
    figures: {
      rtoSubmissionsMs: null,
      rtoSchedulerMs: null,
      rtoExecutionMs: null,
      rpoJobsLost: 0,
      duplicates: 0,
      slowestAnswerDownMs: null,
      acknowledged: w.acknowledged().length,
      refused: w.timeline().refusals.length,
      ticksMissed: 0,
    },
    timeline: w.timeline(),
  }
  for (const c of checks.checks)
    say(`${tag}:   ${c.passed ? 'ok  ' : 'FAIL'} ${c.name}: ${c.details}`)
  for (const n of notes) say(`${tag}:   note: ${n}`)
  say(`${tag}: ${checks.passed && !error ? 'passed' : 'FAILED'}`)
  return {
    drill: 'restore',
    number: 8,
    fault:
      'pgBackRest full backup under load, cluster destroyed, point-in-time restore into a standalone PostgreSQL 15, pgsched started on it',
    windows: { faultStart, recovered },
    checks: error ? { ...checks, passed: false } : checks,
    notes,
    error,
  }
}

/** Which acknowledged jobs exist after the restore, before and after the point. */
async function compare(
  url: string,
  acks: { jobId: string; at: number }[],
  point: number,
): Promise<string[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    const ids = acks.map((a) => a.jobId)
    const rows = await sql<{ id: string }[]>`
      SELECT id::text FROM pgsched.jobs WHERE id = ANY(${ids}::bigint[])`
    const found = new Set(rows.map((r) => r.id))
    const before = acks.filter((a) => a.at <= point)
    const after = acks.filter((a) => a.at > point)
    const missing = before.filter((a) => !found.has(a.jobId)).map((a) => a.jobId)
    return [
      `point in time ${new Date(point).toISOString()}`,
      `acknowledged at or before the point: ${before.length}, present after restore: ${before.length - missing.length}${missing.length ? ` (missing: ${missing.join(', ')})` : ''}`,
      `acknowledged after the point: ${after.length}, present after restore: ${after.filter((a) => found.has(a.jobId)).length} (committed before the point, acknowledged just after it; the rest are gone, as a restore to that point must do)`,
    ]
  } finally {
    await sql.end({ timeout: 1 })
  }
}
