/**
 * Starts PostgreSQL for the suite (TEST_DATABASE_URL, or an embedded server in a temporary
 * folder) and migrates a template database once; each test file clones it.
 */
import type { TestProject } from 'vitest/node'

import { createSql } from '../src/db/client.ts'
import { migrateAll } from '../src/runtime/bootstrap.ts'
import { startTemporaryPostgres } from './processes.ts'

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of a database on the test server with rights to create databases. */
    databaseUrl: string
    /** The migrated template database to clone. */
    templateDatabase: string
  }
}

/** Replaces the database of a Postgres URL. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

export default async function setup(project: TestProject) {
  let url = process.env.TEST_DATABASE_URL
  let stop = async () => {}
  if (!url) {
    const server = await startTemporaryPostgres('pgsched-test')
    url = server.url
    stop = server.stop
  }
  const template = `pgsched_template_${process.pid}`
  const admin = createSql(url, { max: 1 })
  await admin`DROP DATABASE IF EXISTS ${admin(template)}`
  await admin`CREATE DATABASE ${admin(template)}`
  await migrateAll(withDatabase(url, template))
  project.provide('databaseUrl', url)
  project.provide('templateDatabase', template)
  return async () => {
    await admin`DROP DATABASE IF EXISTS ${admin(template)} WITH (FORCE)`
    await admin.end()
    await stop()
  }
}
