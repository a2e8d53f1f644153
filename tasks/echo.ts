/**
 * An example task handler: submit `{"name": "hi", "task": "echo", "payload": {"any": "json"}}`
 * and the run's output is the payload back. The file name is the task name.
 */
import type { TaskContext } from '../src/worker/tasks.ts'

export default function echo(payload: unknown, ctx: TaskContext): unknown {
  ctx.logger.info({ run_id: ctx.runId, attempt: ctx.attempt }, 'echo task ran')
  return payload
}
