/**
 * The portability guard: the core, db, api and scheduler layers (and tracing.ts) must run on any
 * JavaScript runtime, so they may not import Node modules or use Node globals. A source scan
 * names each offending line; the portable tsconfig (no Node types) must also compile.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))

/** What the guard scans: folders and single files, relative to the repository root. */
const PORTABLE = ['src/core', 'src/db', 'src/api', 'src/scheduler', 'src/telemetry/tracing.ts']

const BUILTINS = new Set(builtinModules.map((m) => m.replace(/^node:/, '')))

/** True when a module specifier names a Node built-in module. */
function isNodeModule(specifier: string): boolean {
  if (specifier.startsWith('node:')) return true
  return BUILTINS.has(specifier) || BUILTINS.has(specifier.split('/')[0]!)
}

/** Characters after which a `/` starts a regular expression literal rather than a division. */
const BEFORE_REGEX = new Set([...'(,=:[!&|?{};+-*%<>~^'])
const KEYWORDS_BEFORE_REGEX =
  /\b(?:return|typeof|case|do|else|in|of|void|yield|await|throw|delete)$/

/**
 * Blanks comments (and, with `strings`, the text of string, template and regex literals) with spaces,
 * keeping every newline so that line numbers stay right. Expressions inside `${}` are kept.
 */
function blank(source: string, o: { strings: boolean }): string {
  const out = source.split('')
  const wipe = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== '\n') out[k] = ' '
  }
  // Stack of open template literals: the brace depth at which each `${` began.
  const templates: number[] = []
  let depth = 0
  let i = 0
  const n = source.length
  /** Skips the text of a template literal from i (just past ` or }) to its end or next `${`. */
  const templateText = () => {
    const start = i
    while (i < n) {
      const c = source[i]
      if (c === '\\') i += 2
      else if (c === '`') {
        if (o.strings) wipe(start, i)
        i++
        return
      } else if (c === '$' && source[i + 1] === '{') {
        if (o.strings) wipe(start, i)
        templates.push(depth)
        depth++
        i += 2
        return
      } else i++
    }
  }
  while (i < n) {
    const c = source[i]!
    const next = source[i + 1]
    if (c === '/' && next === '/') {
      const end = source.indexOf('\n', i)
      const stop = end === -1 ? n : end
      wipe(i, stop)
      i = stop
    } else if (c === '/' && next === '*') {
      const end = source.indexOf('*/', i + 2)
      const stop = end === -1 ? n : end + 2
      wipe(i, stop)
      i = stop
    } else if (c === "'" || c === '"') {
      const start = i + 1
      i++
      while (i < n && source[i] !== c && source[i] !== '\n') i += source[i] === '\\' ? 2 : 1
      if (o.strings) wipe(start, i)
      i++
    } else if (c === '`') {
      i++
      templateText()
    } else if (c === '{') {
      depth++
      i++
    } else if (c === '}') {
      depth--
      i++
      if (templates.length > 0 && templates.at(-1) === depth) {
        templates.pop()
        templateText()
      }
    } else if (c === '/') {
      const before = source.slice(0, i).trimEnd()
      const prev = before.at(-1)
      if (prev === undefined || BEFORE_REGEX.has(prev) || KEYWORDS_BEFORE_REGEX.test(before)) {
        // A regular expression literal: skip to its closing slash, outside character classes.
        let inClass = false
        i++
        const start = i
        while (i < n && source[i] !== '\n') {
          const r = source[i]
          if (r === '\\') i++
          else if (r === '[') inClass = true
          else if (r === ']') inClass = false
          else if (r === '/' && !inClass) break
          i++
        }
        if (o.strings) wipe(start, i)
      }
      i++
    } else i++
  }
  return out.join('')
}

/** One portability violation. */
interface Finding {
  line: number
  text: string
  why: string
}

const IMPORT_PATTERNS = [
  // import … from 'x', export … from 'x' (possibly across lines)
  /\b(?:import|export)\b[^;'"`]*?\bfrom\s*(['"])([^'"]+)\1/g,
  // import 'x'
  /\bimport\s*(['"])([^'"]+)\1/g,
  // import('x'), require('x')
  /(?<![.\w$])(?:import|require)\s*\(\s*(['"])([^'"]+)\1/g,
]

const GLOBAL_PATTERNS: [RegExp, string][] = [
  [/(?<![.\w$])process\b(?=\s*(?:\?\.|[.[]))/g, 'uses the Node global process'],
  [/\b(?:globalThis|global)\s*\??\.\s*process\b/g, 'uses the Node global process'],
  [/(?<![.\w$])Buffer\b/g, 'uses the Node global Buffer'],
  [/\b(?:globalThis|global)\s*\??\.\s*Buffer\b/g, 'uses the Node global Buffer'],
  [/(?<![.\w$])__dirname\b/g, 'uses __dirname'],
  [/(?<![.\w$])__filename\b/g, 'uses __filename'],
  [/(?<![.\w$])require\s*\(/g, 'calls require()'],
]

/** Finds Node-only imports and globals in TypeScript source, ignoring comments and strings. */
function scan(source: string): Finding[] {
  const lines = source.split('\n')
  const lineOf = (index: number) => source.slice(0, index).split('\n').length
  const findings: Finding[] = []
  const add = (index: number, why: string) => {
    const line = lineOf(index)
    if (!findings.some((f) => f.line === line && f.why === why)) {
      findings.push({ line, text: lines[line - 1]!.trim(), why })
    }
  }
  const code = blank(source, { strings: false })
  for (const pattern of IMPORT_PATTERNS) {
    for (const m of code.matchAll(pattern)) {
      const specifier = m[2]!
      if (isNodeModule(specifier)) add(m.index! + m[0].indexOf(specifier), `imports ${specifier}`)
    }
  }
  const bare = blank(source, { strings: true })
  for (const [pattern, why] of GLOBAL_PATTERNS) {
    for (const m of bare.matchAll(pattern)) add(m.index!, why)
  }
  return findings.sort((a, b) => a.line - b.line)
}

/** The .ts files (not tests) the guard covers, relative to the repository root. */
function portableFiles(): string[] {
  const files: string[] = []
  const walk = (path: string) => {
    if (statSync(path).isDirectory()) {
      for (const entry of readdirSync(path).sort()) walk(resolve(path, entry))
    } else if (path.endsWith('.ts') && !path.endsWith('.test.ts')) {
      files.push(relative(root, path))
    }
  }
  for (const p of PORTABLE) walk(resolve(root, p))
  return files
}

describe('the scanner', () => {
  it('flags Node imports and globals', () => {
    const sample = [
      "import { readFileSync } from 'node:fs'",
      "import { join } from 'path'",
      'import {',
      '  spawn,',
      "} from 'child_process'",
      "import type { Readable } from 'node:stream'",
      "export { createHash } from 'crypto'",
      "const os = await import('os')",
      "const fsp = require('fs/promises')",
      'const x = process.env.X',
      'const argv = process ["argv"]',
      "const b = Buffer.from('a')",
      'const d = __dirname',
      'const e = globalThis.process?.env',
    ].join('\n')
    expect(scan(sample).map((f) => `${f.line}: ${f.why}`)).toEqual([
      '1: imports node:fs',
      '2: imports path',
      '5: imports child_process',
      '6: imports node:stream',
      '7: imports crypto',
      '8: imports os',
      '9: imports fs/promises',
      '9: calls require()',
      '10: uses the Node global process',
      '11: uses the Node global process',
      '12: uses the Node global Buffer',
      '13: uses __dirname',
      '14: uses the Node global process',
    ])
  })

  it('ignores comments, strings, lookalike names and packages', () => {
    const sample = [
      '// process.env.X and Buffer in a line comment',
      "/* import { readFileSync } from 'node:fs' */",
      '/**',
      ' * process.exit(1), __dirname, require("fs")',
      ' */',
      "const a = 'process.env.X'",
      'const b = "Buffer.from"',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: sample source with a template literal
      'const c = `process.env.${name} and Buffer`',
      'const d = job.process.id + worker.Buffer',
      'const url = "http://example.com" // process.cwd()',
      "import { z } from 'zod'",
      "import { CronExpressionParser } from 'cron-parser'",
      "import { tracer } from '../telemetry/tracing.ts'",
      'const re = /\\/\\/ process.env/',
      'const q = a / b / c; const processed = true',
    ].join('\n')
    expect(scan(sample)).toEqual([])
  })

  it('still sees code inside a template literal expression', () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: sample source with a template literal
    const sample = 'const s = `env ${process.env.X} here`\nconst t = `${`${Buffer}`}`'
    expect(scan(sample).map((f) => `${f.line}: ${f.why}`)).toEqual([
      '1: uses the Node global process',
      '2: uses the Node global Buffer',
    ])
  })
})

describe('the portable layers', () => {
  it('import no Node module and use no Node global', () => {
    const files = portableFiles()
    expect(files.length).toBeGreaterThan(10)
    expect(files).toContain('src/telemetry/tracing.ts')
    const report = files.flatMap((file) =>
      scan(readFileSync(resolve(root, file), 'utf8')).map(
        (f) => `${file}:${f.line}: ${f.why}: ${f.text}`,
      ),
    )
    expect(report, `Node-only code in the portable layers:\n${report.join('\n')}`).toEqual([])
  })

  it('are read by the scanner as code to their end (no literal or comment left open)', () => {
    for (const file of portableFiles()) {
      const source = readFileSync(resolve(root, file), 'utf8')
      const lines = source.split('\n').length
      const found = scan(`${source}\nconst leak = process.env.X\n`)
      expect(
        found.map((f) => f.line),
        file,
      ).toContain(lines + 1)
    }
  })

  it('type-check without Node types (tsconfig.portable.json)', () => {
    let output = ''
    let ok = true
    try {
      execFileSync(
        process.execPath,
        [resolve(root, 'node_modules/.bin/tsc'), '-p', 'tsconfig.portable.json', '--noEmit'],
        { cwd: root, encoding: 'utf8', stdio: 'pipe' },
      )
    } catch (e) {
      ok = false
      const err = e as { stdout?: string; stderr?: string; message: string }
      output = `${err.stdout ?? ''}${err.stderr ?? ''}` || err.message
    }
    expect(ok, `tsc -p tsconfig.portable.json failed:\n${output}`).toBe(true)
  }, 120_000)
})
