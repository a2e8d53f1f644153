/** The benchmark's no-op task: it measures what pgsched costs around a job that does nothing. */
export default function noop(): void {}
