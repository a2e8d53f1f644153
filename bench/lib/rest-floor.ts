/**
 * @module The REST submit floor: the least an HTTP endpoint on this machine can do for "HTTP +
 * auth + durable insert", measured beside pgsched's `POST /v1/jobs` in the same run. A bare Hono
 * app on @hono/node-server (as pgsched's API) verifies the same HS256 JWT with jose (same issuer,
 * audience and key setup as src/api/tokens.ts), then inserts one row per request into a plain
 * table through the same group commit as pgsched's submissions (src/db/group-commit.ts: shared
 * transactions, answered after commit), and answers 201 with the row's id. No validation, no
 * run, no executor job, no history: what is left is the floor.
 *
 * Run as its own process (like pgsched's API, so autocannon does not share its event loop):
 * `node bench/lib/rest-floor.ts` with DATABASE_URL, PORT and JWT_SECRET; prints `floor listening`.
 */
import type { AddressInfo } from 'node:net'

import { createAdaptorServer } from '@hono/node-server'
import { Hono } from 'hono'
import { jwtVerify } from 'jose'

import { createSql, type Sql } from '../../src/db/client.ts'
import { eachInTransaction, GroupCommit } from '../../src/db/group-commit.ts'

/** Printed once the floor listens. */
export const FLOOR_READY = 'floor listening'

/** The floor's table, created by the benchmark in the floor's own database. */
export const FLOOR_TABLE_DDL = `
  CREATE TABLE IF NOT EXISTS floor_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner text NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`

interface Insert {
  owner: string
  body: unknown
}

async function main(): Promise<void> {
  const sql = createSql(process.env.DATABASE_URL!, { max: 10, applicationName: 'rest-floor' })
  const key = new TextEncoder().encode(process.env.JWT_SECRET!)
  const insertOne = async (tx: Sql, i: Insert) => {
    const [row] = await tx<{ id: number }[]>`
      INSERT INTO floor_jobs (owner, body) VALUES (${i.owner}, ${sql.json(i.body as never)})
      RETURNING id`
    return row!.id
  }
  const commits = new GroupCommit<Insert, number>(sql, eachInTransaction(insertOne))
  const app = new Hono()
  app.post('/v1/jobs', async (c) => {
    const token = c.req.header('authorization')?.replace(/^Bearer /, '') ?? ''
    let owner: string
    try {
      const { payload } = await jwtVerify(token, key, {
        issuer: 'pgsched',
        audience: 'pgsched',
        algorithms: ['HS256'],
      })
      owner = payload.sub!
    } catch {
      return c.json({ title: 'unauthorized' }, 401)
    }
    const id = await commits.run({ owner, body: await c.req.json() })
    return c.json({ job_id: id }, 201)
  })
  const server = createAdaptorServer({ fetch: app.fetch })
  server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
    console.log(`${FLOOR_READY} on ${(server.address() as AddressInfo).port}`)
  })
  process.on('SIGTERM', () => {
    server.close()
    void sql.end().then(() => process.exit(0))
  })
}

if (import.meta.main) await main()
