/**
 * The portability guard: the core, db, api and scheduler layers (and tracing.ts) must run on any
 * JavaScript runtime, so they may not import Node modules or use Node globals. Two tools enforce
 * it, and `npm test` runs both: Biome's rules for those paths (biome.json, `overrides`) and a
 * type-check of them without Node's types (tsconfig.portable.json). Biome catches imports of
 * Node modules (static, dynamic and require), process, Buffer, global, require and
 * __dirname/__filename; the type-check also catches type-only imports and globalThis.Buffer.
 * This file proves that both refuse those (Biome in every portable path, and only there), and
 * that the portable layers pass both.
 */
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))

/** The portable paths, as the type-check lists them: folders, and single files. */
const PORTABLE: string[] = JSON.parse(
  readFileSync(resolve(root, 'tsconfig.portable.json'), 'utf8'),
).include

/** The Biome rules that make up the guard. */
const GUARD_RULES = [
  'lint/correctness/noNodejsModules',
  'lint/correctness/noProcessGlobal',
  'lint/correctness/noGlobalDirnameFilename',
  'lint/style/noProcessEnv',
  'lint/style/noCommonJs',
  'lint/style/noRestrictedGlobals',
]

/** Source that breaks the guard on every line but the last, and the rules each line breaks. */
const PROBE = [
  ["import { readFileSync } from 'node:fs'", ['noNodejsModules']],
  ["import { join } from 'path'", ['noNodejsModules']],
  ["const os = await import('node:os')", ['noNodejsModules']],
  ["const fsp = require('fs/promises')", ['noNodejsModules', 'noCommonJs', 'noRestrictedGlobals']],
  ['const env = process.env.X', ['noProcessEnv', 'noProcessGlobal']],
  ['const pid = globalThis.process.pid', ['noProcessGlobal']],
  ["const bytes = Buffer.from('a')", ['noRestrictedGlobals']],
  ['const later = global.setImmediate', ['noRestrictedGlobals']],
  ['const here = __dirname', ['noGlobalDirnameFilename']],
  ['export const all = [readFileSync, join, os, fsp, env, pid, bytes, later, here]', []],
] as const

/** Where a probe goes for a portable path: the file itself, or a new file in the folder. */
const probePath = (p: string) => (p.endsWith('.ts') ? p : `${p}/portability-probe.ts`)

let work: string

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'pgsched-portability-'))
})

afterAll(() => {
  rmSync(work, { recursive: true, force: true })
})

/** One Biome diagnostic: its rule (e.g. `lint/style/noCommonJs`), file and line. */
interface Diagnostic {
  rule: string
  file: string
  line: number
}

/** Runs `biome lint` in `cwd` and returns the guard's diagnostics, paths relative to `cwd`. */
function biomeGuard(cwd: string, args: string[]): Diagnostic[] {
  let report = ''
  try {
    execFileSync(
      process.execPath,
      [
        resolve(root, 'node_modules/@biomejs/biome/bin/biome'),
        'lint',
        '--reporter=github',
        '--max-diagnostics=none',
        ...args,
      ],
      { cwd, encoding: 'utf8', stdio: 'pipe' },
    )
  } catch (e) {
    report = (e as { stdout?: string }).stdout ?? ''
  }
  // One line per diagnostic: ::error title=<rule>,file=<absolute path>,line=<n>,…
  return [...report.matchAll(/^::\w+ title=([^,]+),file=([^,]+),line=(\d+),/gm)]
    .map(([, rule, file, line]) => ({
      rule: rule!,
      file: relative(cwd, file!),
      line: Number(line),
    }))
    .filter((d) => GUARD_RULES.includes(d.rule))
}

describe('the Biome guard', () => {
  it('covers exactly the paths the portable type-check covers', () => {
    const biome = JSON.parse(readFileSync(resolve(root, 'biome.json'), 'utf8'))
    const guard = (biome.overrides ?? []).find(
      (o: { linter?: { rules?: { correctness?: { noNodejsModules?: unknown } } } }) =>
        o.linter?.rules?.correctness?.noNodejsModules === 'error',
    )
    expect(guard, 'an override of biome.json with noNodejsModules: error').toBeDefined()
    const paths = (guard.includes as string[]).map((p) => p.replace(/\/\*\*$/, '')).sort()
    expect(paths).toEqual([...PORTABLE].sort())
  })

  it('refuses Node modules and globals in every portable path, and only there', () => {
    // A copy of the real configuration beside probes laid out as in the repository, so that
    // nothing is written into the working tree.
    const lint = join(work, 'lint')
    mkdirSync(lint)
    cpSync(resolve(root, 'biome.json'), join(lint, 'biome.json'))
    const source = `${PROBE.map(([line]) => line).join('\n')}\n`
    const control = 'src/worker/portability-probe.ts'
    for (const file of [...PORTABLE.map(probePath), control]) {
      mkdirSync(dirname(join(lint, file)), { recursive: true })
      writeFileSync(join(lint, file), source)
    }
    const found = biomeGuard(lint, ['--vcs-enabled=false', '.'])
    const of = (file: string) =>
      found
        .filter((d) => d.file === file)
        .map((d) => `${d.line} ${d.rule.split('/').at(-1)}`)
        .sort()
    const expected = PROBE.flatMap(([, rules], i) => rules.map((r) => `${i + 1} ${r}`)).sort()
    for (const p of PORTABLE) expect(of(probePath(p)), probePath(p)).toEqual(expected)
    expect(of(control), `${control} is not portable: the guard must not apply`).toEqual([])
  })

  it('passes for the portable layers', () => {
    const only = GUARD_RULES.map((r) => `--only=${r.replace(/^lint\//, '')}`)
    const found = biomeGuard(root, [...only, ...PORTABLE])
    expect(found.map((d) => `${d.file}:${d.line}: ${d.rule}`)).toEqual([])
  })
})

describe('the type-check without Node types (tsconfig.portable.json)', () => {
  it('passes for the portable layers, and refuses type imports, process and Buffer', () => {
    // The real portable program plus one probe outside the tree: only the probe may fail. An
    // ES module (.mts), as the tree's files are: a CommonJS probe would fail for other reasons.
    const probe = join(work, 'types-probe.mts')
    writeFileSync(
      probe,
      [
        "import type { Readable } from 'node:stream'",
        'export type R = Readable',
        'export const pid = process.pid',
        'export const bytes = Buffer.alloc(1)',
        'export const alsoBytes = globalThis.Buffer',
        'export const here = __dirname',
        '',
      ].join('\n'),
    )
    const config = join(work, 'tsconfig.json')
    writeFileSync(
      config,
      JSON.stringify({
        extends: resolve(root, 'tsconfig.portable.json'),
        // Type packages resolve from the repository, as they do for the real config.
        compilerOptions: { typeRoots: [resolve(root, 'node_modules/@types')] },
        include: [...PORTABLE.map((p) => resolve(root, p)), probe],
      }),
    )
    let output = ''
    try {
      execFileSync(
        process.execPath,
        [resolve(root, 'node_modules/.bin/tsc'), '-p', config, '--noEmit', '--pretty', 'false'],
        { cwd: root, encoding: 'utf8', stdio: 'pipe' },
      )
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string; message: string }
      output = `${err.stdout ?? ''}${err.stderr ?? ''}` || err.message
    }
    const errors = output.split('\n').filter((l) => /error TS\d+/.test(l))
    const outside = errors.filter((l) => !l.includes('types-probe.mts'))
    expect(outside, `the portable layers fail to type-check without Node types`).toEqual([])
    // Refused because the names are unknown there, not for any other reason.
    const refused = errors
      .filter((l) => /Cannot find name|has no index signature/.test(l))
      .map((l) => Number(/types-probe\.mts\((\d+),/.exec(l)?.[1]))
    expect(errors, 'every error of the probe is about an unknown name').toHaveLength(refused.length)
    expect(
      refused.sort((a, b) => a - b),
      'lines of the probe the type-check refuses',
    ).toEqual([1, 3, 4, 5, 6])
  }, 120_000)
})
