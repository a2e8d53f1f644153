/**
 * @module OpenTelemetry SDK for Node. Metrics are always collected for the Prometheus text that
 * GET /metrics serves, and pushed over OTLP as well when OTEL_EXPORTER_OTLP_ENDPOINT (or
 * OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) is set. Traces are recorded only when an exporter is asked
 * for (an OTLP endpoint, or OTEL_TRACES_EXPORTER): a plain `npm start` records and exports none.
 * The SDK reads the other standard OTEL_* variables itself (sampler, headers, protocol…);
 * OTEL_SDK_DISABLED=true turns all of it off.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto'
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { type IMetricReader, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
import { NodeSDK } from '@opentelemetry/sdk-node'

import { instruments } from './metrics.ts'

/** The SDK of this process. */
export interface Telemetry {
  /** The metrics of this process in the Prometheus text format; reads memory only. */
  metricsText(): Promise<string>
  /** Whether spans are recorded and exported. */
  readonly tracing: boolean
  shutdown(): Promise<void>
}

/** Starts the SDK for this process. */
export function startTelemetry(env: NodeJS.ProcessEnv = process.env): Telemetry {
  // The standard switch: no SDK at all, every instrument and span a no-op.
  if (env.OTEL_SDK_DISABLED === 'true') {
    return {
      tracing: false,
      metricsText: async () => '# telemetry is off (OTEL_SDK_DISABLED=true)\n',
      shutdown: async () => {},
    }
  }
  const prometheus = new PrometheusExporter({ preventServerStart: true })
  const readers: IMetricReader[] = [prometheus]
  const otlp = Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT)
  if ((otlp || env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) && env.OTEL_METRICS_EXPORTER !== 'none') {
    readers.push(new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter() }))
  }
  const tracesExporter = env.OTEL_TRACES_EXPORTER
  const tracing =
    tracesExporter !== undefined && tracesExporter !== ''
      ? tracesExporter !== 'none'
      : otlp || Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  const sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME ?? 'pgsched',
    metricReaders: readers,
    // No processor: no tracer provider is registered, so spans cost nothing.
    ...(tracing ? {} : { spanProcessors: [] }),
  })
  sdk.start()
  // The observable gauges exist from the first collection on, even before any other use.
  instruments()
  const serializer = new PrometheusSerializer()
  return {
    tracing,
    async metricsText() {
      const { resourceMetrics } = await prometheus.collect()
      return serializer.serialize(resourceMetrics)
    },
    shutdown: () => sdk.shutdown(),
  }
}

/**
 * Serves GET /metrics of this process (the scheduler's and the worker's, which have no API) on
 * `host:port` (0: any free port); resolves to its URL once listening.
 */
export async function serveMetrics(
  telemetry: Telemetry,
  host: string,
  port: number,
): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('GET /metrics only\n')
      return
    }
    telemetry.metricsText().then(
      (text) =>
        res
          .writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' })
          .end(text),
      (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
    )
  })
  await new Promise<void>((listening, fail) => {
    server.once('error', fail)
    server.listen(port, host, () => listening())
  })
  const { address, family, port: bound } = server.address() as AddressInfo
  return {
    url: `http://${family === 'IPv6' ? `[${address}]` : address}:${bound}/metrics`,
    close: () => new Promise((done) => server.close(() => done())),
  }
}
