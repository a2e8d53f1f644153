/**
 * An OTLP/HTTP receiver for tests: decodes the protobuf wire format of trace exports
 * (opentelemetry-proto's ExportTraceServiceRequest) into plain spans, so a test can check what the
 * real SDK exporter of a pgsched process sent. Only the fields the tests read are decoded.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** A decoded span. Ids are lowercase hex, as in a traceparent. */
export interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId: string
  name: string
  /** 1 internal, 2 server, 3 client, 4 producer, 5 consumer (the OTLP enum). */
  kind: number
  startNs: bigint
  endNs: bigint
  attributes: Record<string, string | number | boolean>
  links: { traceId: string; spanId: string }[]
  /** 0 unset, 1 ok, 2 error. */
  statusCode: number
  service: string
}

export const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const

/** Reads protobuf fields of one message: [field number, wire type, value]. */
function* fields(buf: Uint8Array): Generator<[number, number, Uint8Array | bigint]> {
  let i = 0
  const varint = (): bigint => {
    let shift = 0n
    let out = 0n
    for (;;) {
      const b = buf[i++]!
      out |= BigInt(b & 0x7f) << shift
      if ((b & 0x80) === 0) return out
      shift += 7n
    }
  }
  while (i < buf.length) {
    const key = Number(varint())
    const field = key >>> 3
    const wire = key & 7
    if (wire === 0) yield [field, wire, varint()]
    else if (wire === 1) {
      yield [field, wire, new DataView(buf.buffer, buf.byteOffset + i, 8).getBigUint64(0, true)]
      i += 8
    } else if (wire === 2) {
      const len = Number(varint())
      yield [field, wire, buf.subarray(i, i + len)]
      i += len
    } else if (wire === 5) {
      yield [
        field,
        wire,
        BigInt(new DataView(buf.buffer, buf.byteOffset + i, 4).getUint32(0, true)),
      ]
      i += 4
    } else throw new Error(`unsupported protobuf wire type ${wire}`)
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8')

function anyValue(buf: Uint8Array): string | number | boolean {
  for (const [f, , v] of fields(buf)) {
    if (f === 1) return text(v as Uint8Array)
    if (f === 2) return v !== 0n
    if (f === 3) return Number(BigInt.asIntN(64, v as bigint))
    if (f === 4) {
      const d = new DataView(new ArrayBuffer(8))
      d.setBigUint64(0, v as bigint, true)
      return d.getFloat64(0, true)
    }
  }
  return ''
}

function keyValues(list: Uint8Array[]): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {}
  for (const kv of list) {
    let key = ''
    let value: string | number | boolean = ''
    for (const [f, , v] of fields(kv)) {
      if (f === 1) key = text(v as Uint8Array)
      if (f === 2) value = anyValue(v as Uint8Array)
    }
    out[key] = value
  }
  return out
}

function span(buf: Uint8Array, service: string): ReceivedSpan {
  const s: ReceivedSpan = {
    traceId: '',
    spanId: '',
    parentSpanId: '',
    name: '',
    kind: 0,
    startNs: 0n,
    endNs: 0n,
    attributes: {},
    links: [],
    statusCode: 0,
    service,
  }
  const attrs: Uint8Array[] = []
  for (const [f, , v] of fields(buf)) {
    if (f === 1) s.traceId = hex(v as Uint8Array)
    else if (f === 2) s.spanId = hex(v as Uint8Array)
    else if (f === 4) s.parentSpanId = hex(v as Uint8Array)
    else if (f === 5) s.name = text(v as Uint8Array)
    else if (f === 6) s.kind = Number(v)
    else if (f === 7) s.startNs = v as bigint
    else if (f === 8) s.endNs = v as bigint
    else if (f === 9) attrs.push(v as Uint8Array)
    else if (f === 13) {
      const link = { traceId: '', spanId: '' }
      for (const [lf, , lv] of fields(v as Uint8Array)) {
        if (lf === 1) link.traceId = hex(lv as Uint8Array)
        if (lf === 2) link.spanId = hex(lv as Uint8Array)
      }
      s.links.push(link)
    } else if (f === 15) {
      for (const [sf, , sv] of fields(v as Uint8Array)) if (sf === 3) s.statusCode = Number(sv)
    }
  }
  s.attributes = keyValues(attrs)
  return s
}

/** Decodes an ExportTraceServiceRequest. */
export function decodeTraces(body: Uint8Array): ReceivedSpan[] {
  const out: ReceivedSpan[] = []
  for (const [f, , resourceSpans] of fields(body)) {
    if (f !== 1) continue
    let service = ''
    const scopes: Uint8Array[] = []
    for (const [rf, , rv] of fields(resourceSpans as Uint8Array)) {
      if (rf === 1) {
        const attrs: Uint8Array[] = []
        for (const [af, , av] of fields(rv as Uint8Array))
          if (af === 1) attrs.push(av as Uint8Array)
        service = String(keyValues(attrs)['service.name'] ?? '')
      } else if (rf === 2) scopes.push(rv as Uint8Array)
    }
    for (const scope of scopes) {
      for (const [sf, , sv] of fields(scope))
        if (sf === 2) out.push(span(sv as Uint8Array, service))
    }
  }
  return out
}

/** A receiver on a free loopback port; every span it was sent so far is in `spans`. */
export async function startOtlpReceiver(): Promise<{
  endpoint: string
  spans: ReceivedSpan[]
  /** Paths posted to, e.g. /v1/traces and /v1/metrics. */
  posts: string[]
  close(): Promise<void>
}> {
  const spans: ReceivedSpan[] = []
  const posts: string[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      posts.push(req.url ?? '')
      if (req.url === '/v1/traces') {
        if (req.headers['content-type'] !== 'application/x-protobuf') {
          res.writeHead(415).end()
          return
        }
        spans.push(...decodeTraces(Buffer.concat(chunks)))
      }
      // An empty ExportTraceServiceResponse / ExportMetricsServiceResponse: full success.
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const { port } = server.address() as AddressInfo
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    posts,
    close: () => new Promise((r) => server.close(() => r())),
  }
}
