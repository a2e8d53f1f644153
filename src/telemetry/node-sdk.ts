/**
 * @module OpenTelemetry SDK for Node. Starts only when OTEL_EXPORTER_OTLP_ENDPOINT is set, so a
 * plain `npm start` exports nothing; the SDK reads the standard OTEL_* variables itself.
 */
import { NodeSDK } from '@opentelemetry/sdk-node'

/** Starts the SDK when configured; returns its shutdown. */
export function startTelemetry(env: NodeJS.ProcessEnv = process.env): () => Promise<void> {
  if (!env.OTEL_EXPORTER_OTLP_ENDPOINT) return async () => {}
  const sdk = new NodeSDK({ serviceName: env.OTEL_SERVICE_NAME ?? 'pgsched' })
  sdk.start()
  return () => sdk.shutdown()
}
