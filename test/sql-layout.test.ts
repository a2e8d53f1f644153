/**
 * The SQL layout rules of STYLE.md §2, checked on the files themselves (no database):
 *
 * (a) Every function or procedure signature and every trigger (name, table) is CREATEd exactly
 *     once in the tree, and all overloads of a function name are created in one file. Searched:
 *     sql/**\/*.sql and every .ts file outside node_modules, dot folders, src/db/generated (a
 *     bundle of sql/) and test code (test/ and *.test.ts, which may create throwaway functions in
 *     their own databases). The names listed in sql/schema.sql count too, so a function that
 *     exists only through ALTER FUNCTION … RENAME (created zero times) is reported.
 * (b) No block of SQL is repeated in sql/: no run of 6 or more consecutive lines, comments and
 *     blank lines left out and whitespace collapsed, appears twice, within a file or across
 *     files, unless the run is boilerplate (fewer than 3 lines that say something: `BEGIN`,
 *     `END IF;`, `$$;`, `LANGUAGE plpgsql AS $$` and the like do not). sql/schema.sql is
 *     compared with everything but the migrations: its tables restate the migrations' on
 *     purpose, but it must not restate a function's body.
 * (c) A versioned migration (sql/migrations/) creates no function, procedure, trigger or view,
 *     whether directly, inside a DO block or through EXECUTE; only a DO block that creates
 *     roles (CREATE ROLE has no IF NOT EXISTS) is exempt. They belong in sql/functions/.
 * (d) Every function and trigger listed in sql/schema.sql is created in sql/functions/.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'

import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))

/** A source file, its path relative to the repository root. */
interface Source {
  path: string
  text: string
}

function walk(dir: string, keep: (path: string) => boolean): Source[] {
  const out: Source[] = []
  if (!existsSync(dir)) return out
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const full = `${dir}/${e.name}`
    const path = relative(root, full)
    if (e.isDirectory()) {
      if (e.name.startsWith('.') || e.name === 'node_modules' || path === 'src/db/generated') {
        continue
      }
      out.push(...walk(full, keep))
    } else if (e.isFile() && keep(path)) {
      out.push({ path, text: readFileSync(full, 'utf8') })
    }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

const sqlFiles = walk(`${root}sql`, (p) => p.endsWith('.sql'))
const tsFiles = walk(root.replace(/\/$/, ''), (p) => {
  if (!p.endsWith('.ts') || p.endsWith('.test.ts')) return false
  return !p.startsWith('test/') && !p.startsWith('bench/out/')
})
const SCHEMA_SQL = 'sql/schema.sql'
const schemaSql = sqlFiles.find((f) => f.path === SCHEMA_SQL)

/**
 * The text with SQL comments (`-- …`, nested `/* … *\/`) blanked out, newlines kept so offsets
 * and line numbers still hold. Quoted strings and identifiers are kept; dollar-quoted bodies are
 * code, so comments inside them go too.
 */
function stripComments(text: string): string {
  const out = text.split('')
  let i = 0
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== '\n') out[k] = ' '
  }
  while (i < text.length) {
    const c = text[i]
    if (c === '-' && text[i + 1] === '-') {
      const end = text.indexOf('\n', i)
      const stop = end === -1 ? text.length : end
      blank(i, stop)
      i = stop
    } else if (c === '/' && text[i + 1] === '*') {
      let depth = 0
      let k = i
      while (k < text.length) {
        if (text[k] === '/' && text[k + 1] === '*') {
          depth++
          k += 2
        } else if (text[k] === '*' && text[k + 1] === '/') {
          depth--
          k += 2
          if (depth === 0) break
        } else k++
      }
      blank(i, k)
      i = k
    } else if (c === "'" || c === '"') {
      const escapes = c === "'" && /[eE]/.test(text[i - 1] ?? '')
      let k = i + 1
      while (k < text.length) {
        if (escapes && text[k] === '\\') k += 2
        else if (text[k] === c && text[k + 1] === c) k += 2
        else if (text[k] === c) break
        else k++
      }
      i = k + 1
    } else i++
  }
  return out.join('')
}

function lineAt(text: string, offset: number): number {
  let line = 1
  for (let k = 0; k < offset; k++) if (text[k] === '\n') line++
  return line
}

/** A line of SQL as compared: comments gone, whitespace collapsed. */
interface Line {
  line: number
  text: string
}

// --- (a) and (d): what creates what ------------------------------------------------------------

/** One CREATE of a function, procedure or trigger, found in a file. */
interface Definition {
  /** 'function pgsched.run_finish(bigint,integer,…)' or 'trigger runs_settled ON pgsched.runs'. */
  key: string
  /** 'function pgsched.run_finish': overloads share it. */
  name: string
  at: string
  file: string
}

const IDENT = String.raw`(?:"[^"]+"|[A-Za-z_][\w$]*)`
const QUALIFIED = `${IDENT}(?:\\s*\\.\\s*${IDENT})?`
const CREATE_ROUTINE = new RegExp(
  String.raw`\bCREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+(${QUALIFIED})\s*\(`,
  'gi',
)
const CREATE_TRIGGER = new RegExp(
  String.raw`\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+(${IDENT})\s[\s\S]*?\bON\s+(${QUALIFIED})`,
  'gi',
)

/** 'pgsched.run_finish' from '"pgsched" . run_finish'; unqualified names are pgsched's. */
function qualify(name: string): string {
  const parts = name.split('.').map((p) => p.trim().replace(/^"|"$/g, ''))
  const full = parts.length === 1 ? ['pgsched', parts[0]!] : parts
  return full.join('.').toLowerCase()
}

// Spellings of the same type, as PostgreSQL prints them.
const TYPE_ALIASES: Record<string, string> = {
  int: 'integer',
  int4: 'integer',
  int8: 'bigint',
  int2: 'smallint',
  bool: 'boolean',
  float8: 'double precision',
  float4: 'real',
  float: 'double precision',
  decimal: 'numeric',
  varchar: 'character varying',
  char: 'character',
  timestamptz: 'timestamp with time zone',
  timestamp: 'timestamp without time zone',
  timetz: 'time with time zone',
  time: 'time without time zone',
}

/** Splits at commas outside parentheses, brackets and quotes. */
function splitTopLevel(s: string): string[] {
  const parts: string[] = []
  let depth = 0
  let quote = ''
  let start = 0
  for (let k = 0; k < s.length; k++) {
    const c = s[k]!
    if (quote) {
      if (c === quote) quote = ''
    } else if (c === "'" || c === '"') quote = c
    else if (c === '(' || c === '[') depth++
    else if (c === ')' || c === ']') depth--
    else if (c === ',' && depth === 0) {
      parts.push(s.slice(start, k))
      start = k + 1
    }
  }
  parts.push(s.slice(start))
  return parts.map((p) => p.trim()).filter((p) => p !== '')
}

/** The text inside the parenthesis opening at `open`, or undefined when it never closes. */
function parenthesised(text: string, open: number): string | undefined {
  let depth = 0
  let quote = ''
  for (let k = open; k < text.length; k++) {
    const c = text[k]!
    if (quote) {
      if (c === quote) quote = ''
    } else if (c === "'" || c === '"') quote = c
    else if (c === '(') depth++
    else if (c === ')' && --depth === 0) return text.slice(open + 1, k)
  }
  return undefined
}

/**
 * The identity argument types of an argument list, as in regprocedure:
 * 'p_id bigint, p_at timestamptz DEFAULT now(), OUT x int' gives 'bigint,timestamp with time zone'.
 */
function identityTypes(args: string): string {
  const types: string[] = []
  for (const arg of splitTopLevel(args)) {
    let words = arg
      .replace(/\s+(DEFAULT\b|=)[\s\S]*$/i, '')
      .trim()
      .split(/\s+/)
    const mode = words[0]!.toUpperCase()
    if (mode === 'OUT' || mode === 'TABLE') continue
    if (['IN', 'INOUT', 'VARIADIC'].includes(mode)) words = words.slice(1)
    const [first = '', second = ''] = words.map((w) => w.toLowerCase())
    const typeFirst =
      words.length === 1 ||
      (first === 'double' && second === 'precision') ||
      (['character', 'bit'].includes(first) && second.startsWith('varying')) ||
      (['timestamp', 'time'].includes(first) && /^(with|without|\()/.test(second))
    const type = (typeFirst ? words : words.slice(1))
      .join(' ')
      .toLowerCase()
      .replace(/\s*\([^)]*\)/g, '')
      .replace(/\s*\[\s*\]/g, '[]')
    const array = type.endsWith('[]') ? '[]' : ''
    const base = array ? type.slice(0, -2) : type
    types.push(`${TYPE_ALIASES[base] ?? base}${array}`)
  }
  return types.join(',')
}

/** Every CREATE FUNCTION, PROCEDURE and TRIGGER in a file; SQL comments skipped in .sql files. */
function definitionsIn(file: Source): Definition[] {
  const text = file.path.endsWith('.sql') ? stripComments(file.text) : file.text
  const found: Definition[] = []
  for (const m of text.matchAll(CREATE_ROUTINE)) {
    const open = m.index + m[0].length - 1
    const args = parenthesised(text, open)
    if (args === undefined) continue
    const name = `${m[1]!.toLowerCase() === 'procedure' ? 'procedure' : 'function'} ${qualify(m[2]!)}`
    found.push({
      key: `${name}(${identityTypes(args)})`,
      name,
      at: `${file.path}:${lineAt(text, m.index)}`,
      file: file.path,
    })
  }
  for (const m of text.matchAll(CREATE_TRIGGER)) {
    const name = `trigger ${m[1]!.replace(/"/g, '').toLowerCase()} ON ${qualify(m[2]!)}`
    found.push({ key: name, name, at: `${file.path}:${lineAt(text, m.index)}`, file: file.path })
  }
  return found
}

/** What sql/schema.sql lists: its function and trigger comment lines, as definition keys. */
function listedInSchema(): { key: string; line: number }[] {
  if (!schemaSql) return []
  const listed: { key: string; line: number }[] = []
  schemaSql.text.split('\n').forEach((line, i) => {
    const fn = /^-- (procedure |aggregate |window )?([\w$."]+)\(/.exec(line)
    if (fn) {
      const args = parenthesised(line, fn[0].length - 1) ?? ''
      const kind = fn[1]?.trim() === 'procedure' ? 'procedure' : 'function'
      listed.push({ key: `${kind} ${qualify(fn[2]!)}(${identityTypes(args)})`, line: i + 1 })
    }
    const trigger = new RegExp(
      `^-- (?:constraint )?trigger (${IDENT}) [\\s\\S]*?\\bON (${QUALIFIED})`,
    ).exec(line)
    if (trigger) {
      listed.push({
        key: `trigger ${trigger[1]!.replace(/"/g, '').toLowerCase()} ON ${qualify(trigger[2]!)}`,
        line: i + 1,
      })
    }
  })
  return listed
}

describe('sql layout (STYLE.md §2: functions, triggers and views are not migrations)', () => {
  it('(a) creates each function signature and each trigger exactly once in the tree', () => {
    const definitions = [...sqlFiles, ...tsFiles].flatMap(definitionsIn)
    const byKey = new Map<string, Definition[]>()
    for (const d of definitions) byKey.set(d.key, [...(byKey.get(d.key) ?? []), d])
    for (const { key } of listedInSchema()) if (!byKey.has(key)) byKey.set(key, [])
    const problems: string[] = []
    for (const [key, defs] of [...byKey].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (defs.length === 0) {
        problems.push(`${key} is never created (listed in ${SCHEMA_SQL})`)
      } else if (defs.length > 1) {
        problems.push(`${key} is created ${defs.length} times: ${defs.map((d) => d.at).join(', ')}`)
      }
    }
    // Overloads (same name, other argument types) belong together: a new signature in another
    // file is a redefinition, not an overload.
    const byName = new Map<string, Definition[]>()
    for (const d of definitions) byName.set(d.name, [...(byName.get(d.name) ?? []), d])
    for (const [name, defs] of [...byName].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const files = [...new Set(defs.map((d) => d.file))]
      if (files.length > 1 && new Set(defs.map((d) => d.key)).size > 1) {
        problems.push(
          `${name} has overloads created in ${files.length} files: ${defs.map((d) => `${d.key.slice(name.length)} at ${d.at}`).join(', ')}`,
        )
      }
    }
    expect(problems.length, `${problems.length} problems:\n${problems.join('\n')}\n`).toBe(0)
  })

  it('(b) repeats no block of 6 or more SQL lines in sql/', () => {
    const WINDOW = 6
    const MEANINGFUL_PER_BLOCK = 3
    // Lines that say nothing on their own: block keywords, dollar quotes, closing brackets, and
    // the LANGUAGE, RETURNS <type> and SET search_path lines every function has.
    const BOILERPLATE =
      /^(?:BEGIN|END(?: IF| LOOP| CASE)?|ELSE|LOOP|DECLARE|THEN|RETURN(?: NEXT| QUERY)?|(?:AS )?\$\$|END \$\$|\)(?: AS \w+)?|\);?|LANGUAGE .*|RETURNS [\w.[\]]+|SET search_path = .*)[;,]?$/i
    const files: Line[][] = sqlFiles.map((f) =>
      stripComments(f.text)
        .split('\n')
        .map((t, i) => ({ line: i + 1, text: t.trim().replace(/\s+/g, ' ') }))
        .filter((l) => l.text !== ''),
    )
    const isMigration = (file: number) => sqlFiles[file]!.path.startsWith('sql/migrations/')
    const isSchema = (file: number) => sqlFiles[file]!.path === SCHEMA_SQL
    const comparable = (a: number, b: number) =>
      !((isSchema(a) && (isSchema(b) || isMigration(b))) || (isSchema(b) && isMigration(a)))
    const windows = new Map<string, { file: number; index: number }[]>()
    files.forEach((lines, file) => {
      for (let index = 0; index + WINDOW <= lines.length; index++) {
        const block = lines.slice(index, index + WINDOW)
        if (block.filter((l) => !BOILERPLATE.test(l.text)).length < MEANINGFUL_PER_BLOCK) continue
        const key = block.map((l) => l.text).join('\n')
        windows.set(key, [...(windows.get(key) ?? []), { file, index }])
      }
    })
    // Pairs of places where a window repeats, then grown into maximal runs.
    const pairs = new Set<string>()
    for (const places of windows.values()) {
      for (let i = 0; i < places.length; i++) {
        for (let j = i + 1; j < places.length; j++) {
          const [a, b] = [places[i]!, places[j]!]
          if (comparable(a.file, b.file)) pairs.add(`${a.file}:${a.index}:${b.file}:${b.index}`)
        }
      }
    }
    const problems: string[] = []
    for (const pair of [...pairs].sort()) {
      const [fa, ia, fb, ib] = pair.split(':').map(Number) as [number, number, number, number]
      if (pairs.has(`${fa}:${ia - 1}:${fb}:${ib - 1}`)) continue // inside a run already reported
      let n = WINDOW
      while (pairs.has(`${fa}:${ia + n - WINDOW + 1}:${fb}:${ib + n - WINDOW + 1}`)) n++
      const [la, lb] = [files[fa]!, files[fb]!]
      const span = (lines: Line[], i: number) => `${lines[i]!.line}-${lines[i + n - 1]!.line}`
      const first = la.slice(ia, ia + n).find((l) => !BOILERPLATE.test(l.text))!
      problems.push(
        `${n} lines repeated: ${sqlFiles[fa]!.path}:${span(la, ia)} and ${sqlFiles[fb]!.path}:${span(lb, ib)}, around \`${first.text}\``,
      )
    }
    expect(problems.length, `${problems.length} repeated blocks:\n${problems.join('\n')}\n`).toBe(0)
  })

  it('(c) keeps functions, procedures, triggers and views out of versioned migrations', () => {
    const FORBIDDEN =
      /\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:CONSTRAINT|EVENT)\s+TRIGGER|TRIGGER|FUNCTION|PROCEDURE|(?:TEMP(?:ORARY)?\s+|MATERIALIZED\s+|RECURSIVE\s+)?VIEW)\s+[\w$."]+/gi
    const DO_BLOCK = /\bDO\s+(?:LANGUAGE\s+\w+\s+)?(\$\w*\$)([\s\S]*?)\1/gi
    const problems: string[] = []
    for (const file of sqlFiles.filter((f) => f.path.startsWith('sql/migrations/'))) {
      const text = stripComments(file.text)
      const roleBlocks = [...text.matchAll(DO_BLOCK)]
        .filter((m) => /\bCREATE\s+ROLE\b/i.test(m[2]!))
        .map((m) => [m.index, m.index + m[0].length] as const)
      for (const m of text.matchAll(FORBIDDEN)) {
        if (roleBlocks.some(([from, to]) => m.index >= from && m.index < to)) continue
        problems.push(`${file.path}:${lineAt(text, m.index)}: ${m[0].replace(/\s+/g, ' ')}`)
      }
    }
    expect(
      problems.length,
      `${problems.length} definitions in versioned migrations (move them to sql/functions/):\n${problems.join('\n')}\n`,
    ).toBe(0)
  })

  it(`(d) defines every function and trigger listed in ${SCHEMA_SQL} in sql/functions/`, () => {
    expect(schemaSql, `${SCHEMA_SQL} is missing: run \`npm run build:schema\``).toBeDefined()
    const listed = listedInSchema()
    expect(listed.length, `${SCHEMA_SQL} lists no function`).toBeGreaterThan(0)
    const defined = new Set(
      sqlFiles
        .filter((f) => f.path.startsWith('sql/functions/'))
        .flatMap((f) => definitionsIn(f).map((d) => d.key)),
    )
    const missing = listed
      .filter((l) => !defined.has(l.key))
      .map((l) => `${l.key} (${SCHEMA_SQL}:${l.line})`)
    const where = existsSync(`${root}sql/functions`) ? '' : ' (sql/functions/ does not exist)'
    expect(
      missing.length,
      `${missing.length} listed in ${SCHEMA_SQL} but not created in sql/functions/${where}:\n${missing.join('\n')}\n`,
    ).toBe(0)
  })
})
