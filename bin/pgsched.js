#!/usr/bin/env node
// The installed command: runs the TypeScript CLI with Node's type stripping (Node >= 22.18).
import '../src/runtime/node.ts'
