/**
 * @module The sandbox that runs command jobs. prepareSandbox probes the machine once at worker
 * start and returns a Sandbox whose run() executes one attempt: in `bwrap` mode in its own
 * namespaces as an unprivileged user, in `rlimits` mode as an unprivileged user with limits but
 * no isolation (only for a root worker: it has no other wall between the job and the worker), in
 * `none` mode as the worker itself. A mode that cannot work here is reported
 * unavailable and fails every attempt with the reason; it never falls back to a weaker one.
 */
import type { PgschedConfig } from '../../core/config.ts'
import { coerceError } from '../../core/errors.ts'
import {
  JOB_LIMIT_FIELDS,
  type JobLimits,
  type Logger,
  type SandboxMode,
} from '../../core/types.ts'
import { etcFiles, NOBODY_ID, sandboxInitPid, systemMounts, visibleInSandbox } from './bwrap.ts'
import { type CgroupHits, type CgroupHost, type JobCgroup, openCgroups } from './cgroup.ts'
import { newAttemptId, newInstanceId } from './instance-id.ts'
import { type JobUser, resolveJobUser } from './job-user.ts'
import {
  BWRAP_PROCESSES,
  bwrapLaunch,
  type LaunchContext,
  noneLaunch,
  rlimitsLaunch,
} from './launch.ts'
import { plainVerdict, result } from './none.ts'
import { bwrapKnows, explainProbeFailure, findProgram } from './probe.ts'
import { type CommandResult, runProcess, type StopOptions } from './process.ts'
import { type HardLimits, readHardLimits } from './rlimits.ts'
import { removeStaleScratch, ScratchArea, scratchRootDefault } from './scratch.ts'
import { sandboxVerdict } from './verdict.ts'
import { startWatchdog, type Watchdog } from './watchdog.ts'

/** How a worker isolates command jobs, resolved from the config. */
export interface SandboxSettings {
  mode: SandboxMode
  /** The unprivileged user jobs run as; unset: `pgsched-job` (created) as root, else the worker's. */
  jobUser?: string
  /**
   * Where per-attempt scratch folders go.
   * @default `<os.tmpdir()>/pgsched-jobs`
   */
  scratchRoot?: string
  /** Limits of a job that sets none. */
  defaults: Required<JobLimits>
}

/** One attempt of a command job. */
interface SandboxRunOptions extends StopOptions {
  /** Shell command line, run with /bin/sh -c in the job's scratch folder. */
  command: string
  /** Extra environment variables; the job sees only these and PATH, HOME, LANG, TZ. */
  env?: Record<string, string>
  /** The job's limits; absent fields take the settings' defaults. */
  limits: JobLimits
  /** Whether the job may reach the network (bwrap: the host's network namespace). */
  network: boolean
}

/** A prepared sandbox: probed once, used for every command attempt of a worker. */
export interface Sandbox {
  readonly mode: SandboxMode
  /** False when the mode cannot work on this machine; run() then fails every attempt. */
  readonly available: boolean
  /** What GET /v1/workers shows: 'bwrap', 'rlimits', 'none' or 'unavailable: <reason>'. */
  describe(): string
  /** Runs one attempt to its end and cleans up after it; never throws. */
  run(opts: SandboxRunOptions): Promise<CommandResult>
  /** Cancels running attempts, waits for them, and removes this sandbox's folders and cgroups. */
  stop(): Promise<void>
}

/** The sandbox settings of a resolved config. */
export function sandboxSettingsFromConfig(
  config: Pick<PgschedConfig, 'sandbox' | 'jobUser' | 'jobLimits'>,
): SandboxSettings {
  return {
    mode: config.sandbox,
    ...(config.jobUser === undefined ? {} : { jobUser: config.jobUser }),
    defaults: { ...config.jobLimits },
  }
}

// The probe command and how long it may take (a cold bwrap start is ~10 ms).
const PROBE_TIMEOUT_MS = 10_000

const MIB = 1024 * 1024

/** Probes the machine for `settings.mode` and sweeps what dead earlier workers left behind. */
export async function prepareSandbox(settings: SandboxSettings, logger: Logger): Promise<Sandbox> {
  const impl = new SandboxImpl(settings, logger)
  await impl.prepare()
  return impl
}

class SandboxImpl implements Sandbox {
  readonly mode: SandboxMode
  available = false
  private reason = 'not prepared'
  private readonly settings: SandboxSettings
  private readonly logger: Logger
  private readonly instanceId = newInstanceId()
  private user: JobUser | null = null
  private area: ScratchArea | null = null
  private cgroups: CgroupHost | null = null
  private watchdog: Watchdog | null = null
  private hard: HardLimits = readHardLimits()
  private system: string[] = []
  private programs = { bwrap: '', setpriv: '', prlimit: '' }
  private disableUserns = false
  private etc = { passwd: '', group: '' }
  private readonly running = new Map<Promise<CommandResult>, AbortController>()
  private stopped = false

  constructor(settings: SandboxSettings, logger: Logger) {
    this.mode = settings.mode
    this.settings = settings
    this.logger = logger
  }

  describe(): string {
    return this.available ? this.mode : `unavailable: ${this.reason}`
  }

  async prepare(): Promise<void> {
    if (this.mode === 'none') {
      this.logger.warn(
        'PGSCHED_SANDBOX=none: command jobs run as the worker’s own user, with its files, network and no limits; for trusted single-user development only',
      )
    }
    try {
      await this.setUp()
    } catch (e) {
      this.reason = coerceError(e).message
      this.logger.error(
        { sandbox: this.mode, reason: this.reason },
        'the sandbox is unavailable: command jobs will fail',
      )
      return
    }
    if (this.mode === 'none') {
      this.available = true
      return
    }
    // One real job proves the whole chain (user switch, cgroups, namespaces, limits) works here.
    this.available = true
    const probe = await this.run({
      command: 'true',
      timeoutMs: PROBE_TIMEOUT_MS,
      limits: {},
      network: false,
    })
    if (probe.outcome !== 'succeeded') {
      this.available = false
      this.reason = explainProbeFailure(this.mode, probe.error ?? probe.outcome)
      this.logger.error(
        { sandbox: this.mode, reason: this.reason },
        'the sandbox is unavailable: command jobs will fail',
      )
      return
    }
    this.logger.info(
      {
        sandbox: this.mode,
        jobUser: this.user?.name,
        cgroups: this.cgroups?.description ?? 'none (rlimits only)',
      },
      'sandbox ready',
    )
  }

  private async setUp(): Promise<void> {
    const root = process.getuid?.() === 0
    if (this.mode === 'none') {
      const uid = process.getuid?.() ?? 0
      this.user = { name: 'worker', uid, gid: process.getgid?.() ?? 0, switchUser: false }
    } else {
      this.programs.prlimit = need('prlimit', 'install the Debian package util-linux')
      if (root) this.programs.setpriv = need('setpriv', 'install the Debian package util-linux')
      if (this.mode === 'bwrap') {
        this.programs.bwrap = need(
          'bwrap',
          'install the Debian package bubblewrap or set PGSCHED_SANDBOX=rlimits',
        )
        if (!visibleInSandbox(this.programs.prlimit)) {
          throw new Error(`prlimit at ${this.programs.prlimit} would not be visible in the sandbox`)
        }
        this.disableUserns = await bwrapKnows(this.programs.bwrap, '--disable-userns')
        this.system = systemMounts()
      }
      this.user = await resolveJobUser(this.settings.jobUser)
      // Without namespaces the uid is the only wall between a job and the worker: its 0600
      // files, its /proc/<pid>/environ, its signals.
      if (this.mode === 'rlimits' && !this.user.switchUser) {
        throw new Error(rlimitsNeedsRoot(this.user.uid))
      }
      // First: it kills what a dead worker's jobs left running, before their folders go.
      this.cgroups = await openCgroups(this.instanceId, this.logger)
      if (this.cgroups !== null) this.watchdog = startWatchdog(this.cgroups.instanceDirs)
    }
    const scratchRoot = this.settings.scratchRoot ?? scratchRootDefault()
    await removeStaleScratch(scratchRoot, this.logger)
    this.area = await ScratchArea.open(scratchRoot, this.instanceId, this.user)
    if (this.mode === 'bwrap') {
      const inside = this.user.switchUser
        ? this.user
        : { name: 'nobody', uid: NOBODY_ID, gid: NOBODY_ID }
      const files = etcFiles(inside)
      this.etc = {
        passwd: await this.area.writeEtc('passwd', files.passwd),
        group: await this.area.writeEtc('group', files.group),
      }
    }
  }

  run(opts: SandboxRunOptions): Promise<CommandResult> {
    const ac = new AbortController()
    const signal = opts.signal ? AbortSignal.any([opts.signal, ac.signal]) : ac.signal
    const attempt = this.attempt({ ...opts, signal })
    this.running.set(attempt, ac)
    void attempt.finally(() => this.running.delete(attempt))
    return attempt
  }

  async stop(): Promise<void> {
    this.stopped = true
    for (const ac of this.running.values()) ac.abort()
    await Promise.allSettled(this.running.keys())
    this.watchdog?.stop()
    await this.cgroups?.close()
    await this.area?.close().catch((e) => this.logger.warn({ err: e }, 'removing scratch'))
  }

  private async attempt(opts: SandboxRunOptions): Promise<CommandResult> {
    if (this.stopped) return failed('the worker’s sandbox is stopped')
    if (!this.available || this.area === null || this.user === null) {
      return failed(`the sandbox is unavailable: ${this.reason}`)
    }
    if (opts.signal?.aborted) return result(null, null, '', 'cancelled', 'cancelled')
    const limits = this.effectiveLimits(opts.limits)
    if (typeof limits === 'string') return failed(limits)

    const area = this.area
    let scratch: string | null = null
    let cgroup: JobCgroup | null = null
    try {
      scratch = await area.create()
      if (this.cgroups !== null) {
        const overhead = this.mode === 'bwrap' ? BWRAP_PROCESSES : 0
        cgroup = await this.cgroups.create(newAttemptId(), {
          memoryBytes: limits.memory_mb * MIB,
          pidsMax: limits.max_processes + overhead,
        })
      }
      const request = { ...opts, limits, scratch, cgroup }
      if (this.mode === 'none') {
        return plainVerdict(await runProcess(noneLaunch(request)), opts.timeoutMs)
      }
      const ctx = this.launchContext()
      const end = await runProcess(
        this.mode === 'bwrap' ? bwrapLaunch(ctx, request) : rlimitsLaunch(ctx, request),
      )
      let hits: CgroupHits = { memory: false, processes: false }
      if (cgroup !== null) {
        await cgroup.killAll()
        hits = await cgroup.hits()
      }
      return sandboxVerdict(end, {
        timeoutMs: opts.timeoutMs,
        limits,
        hits,
        statusFromBwrap: this.mode === 'bwrap',
        started: this.mode !== 'bwrap' || sandboxInitPid(end.info) !== null,
        rlimitOnly: { memory: !this.cgroups?.memory, processes: !this.cgroups?.pids },
      })
    } catch (e) {
      return failed(`could not prepare the job's sandbox: ${coerceError(e).message}`)
    } finally {
      await cgroup?.remove().catch((e) => this.logger.warn({ err: e }, 'removing a job cgroup'))
      if (scratch !== null) {
        await area
          .remove(scratch, this.mode === 'rlimits' && cgroup === null)
          .catch((e) => this.logger.warn({ err: e, scratch }, 'removing a scratch folder'))
      }
    }
  }

  private launchContext(): LaunchContext {
    return {
      programs: this.programs,
      user: this.user as JobUser,
      system: this.system,
      etc: this.etc,
      disableUserns: this.disableUserns,
      hard: this.hard,
      cgroups: this.cgroups && { memory: this.cgroups.memory, pids: this.cgroups.pids },
    }
  }

  private effectiveLimits(given: JobLimits): Required<JobLimits> | string {
    const limits = { ...this.settings.defaults }
    for (const field of JOB_LIMIT_FIELDS) {
      const value = given[field]
      if (value === undefined) continue
      if (!Number.isSafeInteger(value) || value < 1) {
        return `invalid limit ${field}: ${value} (a positive integer is expected)`
      }
      limits[field] = value
    }
    return limits
  }
}

/** Why `rlimits` mode refuses to run jobs for a worker that cannot switch them to another user. */
export function rlimitsNeedsRoot(uid: number): string {
  return `rlimits mode runs each job as another user, which needs a worker running as root (this one runs as uid ${uid}); its jobs would run as the worker itself and could read its files and its environment through /proc; run the worker as root, or set PGSCHED_SANDBOX=bwrap`
}

function need(program: string, hint: string): string {
  const path = findProgram(program)
  if (path === null) throw new Error(`${program} not found; ${hint}`)
  return path
}

function failed(error: string): CommandResult {
  return result(null, null, '', 'failed', error)
}
