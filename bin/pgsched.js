#!/usr/bin/env node
// The installed command: runs the TypeScript CLI with Node's type stripping (Node >= 22.18).
// Plain JavaScript up to the version check, so that an older Node gets a sentence, not a trace.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(
    `pgsched: needs Node.js 22.18 or newer (it runs its TypeScript with Node's type stripping), and this is Node ${process.versions.node}. Run it through npm (npx pgsched …, npm start), which uses the Node 24 installed in node_modules, or upgrade Node.`,
  )
  process.exit(1)
}
await import('../src/runtime/node.ts')
