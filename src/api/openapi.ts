/** @module Pieces shared by the route declarations of the OpenAPI document. */
import { z } from 'zod'

import { ProblemSchema } from './schemas.ts'

/** Every /v1 route needs a bearer token. */
export const security = [{ bearerAuth: [] }]

/** A JSON response of `schema`. */
export function jsonResponse<T extends z.ZodType>(schema: T, description: string) {
  return { content: { 'application/json': { schema } }, description }
}

/** A page of `item`s with the cursor of the next page. */
export function pageOf<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item), next_cursor: z.string().nullable() })
}

function problem(description: string) {
  return { content: { 'application/problem+json': { schema: ProblemSchema } }, description }
}

/** The problem responses every /v1 route can give. */
export const baseProblems = {
  401: problem('No valid token'),
  403: problem('Your roles may not do this'),
  503: problem('The database is unavailable; retry after the Retry-After seconds'),
}

/** The problem responses of a route on `resource` (e.g. 'job'); `conflict` says when 409 happens. */
export function problemResponses(resource: string, conflict: string) {
  return {
    ...baseProblems,
    400: problem('Invalid request'),
    404: problem(`No such ${resource}, or not yours`),
    409: problem(conflict),
  }
}

/** The id below which the next page starts, from a validated `cursor`. */
export function cursorId(cursor: string | undefined): number | undefined {
  return cursor === undefined ? undefined : Number(cursor)
}
