/**
 * Prometheus metrics (prom-client): one registry per server so tests can run several servers
 * in one process. Labels are bounded sets (routes, error codes), never user data.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rendezvous_process_' });
  return {
    registry,
    requests: new Counter({
      name: 'rendezvous_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    errors: new Counter({
      name: 'rendezvous_errors_total',
      help: 'Error responses by stable error code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
    requestSeconds: new Histogram({
      name: 'rendezvous_http_request_seconds',
      help: 'HTTP request latency',
      labelNames: ['route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry],
    }),
    appends: new Counter({ name: 'rendezvous_log_appends_total', help: 'Entries appended to topic logs', registers: [registry] }),
    rateLimited: new Counter({
      name: 'rendezvous_rate_limited_total',
      help: 'Requests refused by a rate limit',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
    pushes: new Counter({
      name: 'rendezvous_push_total',
      help: 'Push wake-ups by outcome: sent, retried, failed, removed (subscription gone: 404/410), dropped (queue full)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    federation: new Counter({
      name: 'rendezvous_federation_deliveries_total',
      help: 'Outbound federation requests by kind (entries, submit, witness) and outcome (delivered, refused, failed, expired)',
      labelNames: ['kind', 'outcome'] as const,
      registers: [registry],
    }),
    liveBatches: new Counter({
      name: 'rendezvous_live_batches_total',
      help: 'Event batches sent over WebSockets, by path: shared (a commit encoded once for every connection) or store (read back per connection)',
      labelNames: ['path'] as const,
      registers: [registry],
    }),
    connectedDevices: new Gauge({ name: 'rendezvous_connected_devices', help: 'Live WebSocket connections', registers: [registry] }),
    keyPoolLow: new Counter({
      name: 'rendezvous_key_pool_low_total',
      help: 'Key pool reads that found a pool below its low-water mark',
      labelNames: ['pool'] as const,
      registers: [registry],
    }),
    storageSeconds: new Histogram({
      name: 'rendezvous_storage_seconds',
      help: 'Storage operation latency',
      labelNames: ['op'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
