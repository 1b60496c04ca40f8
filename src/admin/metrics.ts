import diagnostics from 'node:diagnostics_channel';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Metric } from 'prom-client';
import type { Logger } from 'pino';
import type { AdminBackend, UpstreamsView } from './types.ts';
import { HTTP_DURATION_BUCKETS, type HttpStatsSnapshot } from '../http/stats.ts';

/**
 * The diagnostics channel a supervisor publishes `{ supervisor, child, restarts }` on.
 *
 * @example
 * diagnostics.channel(RESTART_CHANNEL).publish({ supervisor: 'upstream:app', child: 'health:a', restarts: 1 });
 */
export const RESTART_CHANNEL = 'gatehouse:supervisor:restart';

const BREAKER_VALUE: Record<UpstreamsView['upstreams'][number]['backends'][number]['breaker'], number> = {
  closed: 0,
  open: 1,
  half_open: 2,
};

/**
 * The metrics the admin server serves on `/metrics`.
 *
 * @example
 * worker.on('message', (m) => m.type === 'restart' && admin.metrics.recordRestart(m.supervisor));
 */
export interface AdminMetrics {
  /** A registry of our own (never prom-client's global one). The daemon may register more metrics in it. */
  readonly registry: Registry;
  /** Counts a restart that happened in a worker-thread shard (main-thread restarts arrive on {@link RESTART_CHANNEL}). */
  recordRestart(supervisor: string): void;
  /** Stops listening on the diagnostics channel. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createMetrics}. */
export interface CreateMetricsOptions {
  /** Where collection failures are reported (a backend call that throws keeps the rest of the scrape). */
  log?: Logger;
}

// prom-client's process metrics start an event-loop-delay histogram and a GC observer that can
// never be stopped, so they are created once per process and shared by every registry.
let processMetrics: Registry | undefined;

function addProcessMetrics(registry: Registry): void {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  for (const m of processMetrics.getMetricsAsArray()) registry.registerMetric(m as unknown as Metric);
}

/** A finite, non-negative number, or 0: a counter fed a bad value must not break the scrape. */
function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

/**
 * Builds the contract metrics, computed from the backend at scrape time: per-listener connection
 * and byte counters summed over shards, HTTP requests, durations and upstream retries (the
 * shards' snapshots, asked once per scrape), live actors by type, shard liveness, backend health
 * and breaker state, supervisor restarts, and prom-client's process metrics.
 *
 * @example
 * const metrics = createMetrics(backend, { log });
 * shardPort.on('message', (m) => { if (m.type === 'restart') metrics.recordRestart(m.supervisor); });
 * res.end(await metrics.registry.metrics());
 * await metrics.close();
 */
export function createMetrics(backend: AdminBackend, opts: CreateMetricsOptions = {}): AdminMetrics {
  const registry = new Registry();
  const registers = [registry];
  const log = opts.log;

  // A backend call that throws costs its own metric's series, never the whole scrape.
  function guard<M>(metric: string, fn: (this: M) => void | Promise<void>): (this: M) => Promise<void> {
    return async function collect(this: M) {
      try {
        await fn.call(this);
      } catch (err) {
        log?.warn({ err, metric }, 'metric collection failed');
      }
    };
  }

  function sumListeners(): Map<string, { active: number; outcomes: Map<string, number>; bytesIn: number; bytesOut: number }> {
    const byListener = new Map<string, { active: number; outcomes: Map<string, number>; bytesIn: number; bytesOut: number }>();
    for (const c of backend.listenerCounters()) {
      let s = byListener.get(c.listener);
      if (!s) byListener.set(c.listener, (s = { active: 0, outcomes: new Map(), bytesIn: 0, bytesOut: 0 }));
      s.active += count(c.active);
      s.bytesIn += count(c.bytesIn);
      s.bytesOut += count(c.bytesOut);
      for (const [outcome, n] of Object.entries(c.outcomes ?? {})) {
        s.outcomes.set(outcome, (s.outcomes.get(outcome) ?? 0) + count(n));
      }
    }
    return byListener;
  }

  new Gauge({
    name: 'gatehouse_connections_active',
    help: 'Open connections per listener, summed over shards.',
    labelNames: ['listener'],
    registers,
    collect: guard<Gauge>('gatehouse_connections_active', function () {
      this.reset();
      for (const [listener, s] of sumListeners()) this.set({ listener }, s.active);
    }),
  });

  // These counters live in the shared state table; at scrape time we publish their absolute value.
  new Counter({
    name: 'gatehouse_connections_total',
    help: 'Connections ended per listener, by outcome (ok, rate_limited, over_limit, no_backend, backend_error, timeout, error).',
    labelNames: ['listener', 'outcome'],
    registers,
    collect: guard<Counter>('gatehouse_connections_total', function () {
      this.reset();
      for (const [listener, s] of sumListeners()) {
        for (const [outcome, n] of s.outcomes) this.inc({ listener, outcome }, n);
      }
    }),
  });

  // The shards' HTTP snapshots, asked once per scrape: the collects that read them start together
  // and share the answer.
  let httpScrape: Promise<HttpStatsSnapshot | undefined> | undefined;
  const httpStats = (): Promise<HttpStatsSnapshot | undefined> => {
    if (!backend.httpStats) return Promise.resolve(undefined);
    httpScrape ??= backend.httpStats().finally(() => (httpScrape = undefined));
    return httpScrape;
  };

  // A listener-wide rate limit has no route: its rejections are the listener's rate_limited
  // outcome (state table). A route's limit (HTTP) is counted by the shards' HttpStats.
  new Counter({
    name: 'gatehouse_ratelimit_rejected_total',
    help: 'Connections and requests rejected by a rate limit, per listener and route ("" for a listener-wide limit).',
    labelNames: ['listener', 'route'],
    registers,
    collect: guard<Counter>('gatehouse_ratelimit_rejected_total', async function () {
      const s = await httpStats().catch((err: unknown) => {
        log?.warn({ err, metric: 'gatehouse_ratelimit_rejected_total' }, 'metric collection failed');
        return undefined;
      });
      this.reset();
      for (const [listener, l] of sumListeners()) this.inc({ listener, route: '' }, l.outcomes.get('rate_limited') ?? 0);
      for (const r of s?.rateLimited ?? []) this.inc({ listener: r.listener, route: r.route }, count(r.count));
    }),
  });

  new Counter({
    name: 'gatehouse_bytes_total',
    help: 'Bytes proxied per listener; direction "in" is from clients, "out" is to clients.',
    labelNames: ['listener', 'direction'],
    registers,
    collect: guard<Counter>('gatehouse_bytes_total', function () {
      this.reset();
      for (const [listener, s] of sumListeners()) {
        this.inc({ listener, direction: 'in' }, s.bytesIn);
        this.inc({ listener, direction: 'out' }, s.bytesOut);
      }
    }),
  });

  new Gauge({
    name: 'gatehouse_actors',
    help: 'Live actors by type, across shards.',
    labelNames: ['type'],
    registers,
    collect: guard<Gauge>('gatehouse_actors', async function () {
      const counts = await backend.actorCounts();
      // Reset after the await, so a type that vanished meanwhile is not left behind.
      this.reset();
      for (const [type, n] of Object.entries(counts)) this.set({ type }, count(n));
    }),
  });

  new Gauge({
    name: 'gatehouse_shard_up',
    help: '1 when the data-plane shard is running, 0 when it is down or restarting.',
    labelNames: ['shard'],
    registers,
    collect: guard<Gauge>('gatehouse_shard_up', function () {
      this.reset();
      for (const s of backend.shardsUp()) this.set({ shard: String(s.shard) }, s.up ? 1 : 0);
    }),
  });

  // Cluster mode only: a daemon without `cluster` exports no sample (nothing to be up or down).
  new Gauge({
    name: 'gatehouse_cluster_up',
    help: '1 while this instance reaches the cluster Redis (full or not), 0 while Redis is unreachable and it serves on local state.',
    registers,
    collect: guard<Gauge>('gatehouse_cluster_up', function () {
      this.reset();
      const c = backend.cluster?.();
      if (c) this.set(c.redis === 'down' ? 0 : 1);
    }),
  });

  new Gauge({
    name: 'gatehouse_cluster_redis_full',
    help: '1 while the cluster Redis refuses writes (maxmemory reached) and this instance serves on local state, else 0.',
    registers,
    collect: guard<Gauge>('gatehouse_cluster_redis_full', function () {
      this.reset();
      const c = backend.cluster?.();
      if (c) this.set(c.redis === 'full' ? 1 : 0);
    }),
  });

  // The rate-limit lease path (src/cluster/ratelimit.ts), counted on the main thread.
  const leases = () => backend.cluster?.()?.leases;

  new Gauge({
    name: 'gatehouse_cluster_leases_shared',
    help: '1 while rate limits are shared through Redis leases, 0 while each limit is decided on its local bucket.',
    registers,
    collect: guard<Gauge>('gatehouse_cluster_leases_shared', function () {
      this.reset();
      const l = leases();
      if (l) this.set(l.shared ? 1 : 0);
    }),
  });

  new Counter({
    name: 'gatehouse_cluster_lease_requests_total',
    help: 'Rate-limit lease asks sent to Redis, by answer: granted (at least one token), denied (the shared bucket is empty), error (no answer).',
    labelNames: ['result'],
    registers,
    collect: guard<Counter>('gatehouse_cluster_lease_requests_total', function () {
      this.reset();
      const l = leases();
      if (!l) return;
      this.inc({ result: 'granted' }, count(l.granted));
      this.inc({ result: 'denied' }, count(l.denied));
      this.inc({ result: 'error' }, count(l.error));
    }),
  });

  new Counter({
    name: 'gatehouse_cluster_lease_tokens_total',
    help: 'Rate-limit tokens granted to this instance by Redis leases.',
    registers,
    collect: guard<Counter>('gatehouse_cluster_lease_tokens_total', function () {
      this.reset();
      const l = leases();
      if (l) this.inc(count(l.tokens));
    }),
  });

  new Counter({
    name: 'gatehouse_cluster_lease_roundtrips_total',
    help: 'Redis round trips of the rate-limit lease path (one pipeline carries the asks of one event-loop turn).',
    registers,
    collect: guard<Counter>('gatehouse_cluster_lease_roundtrips_total', function () {
      this.reset();
      const l = leases();
      if (l) this.inc(count(l.roundTrips));
    }),
  });

  new Counter({
    name: 'gatehouse_cluster_lease_roundtrip_seconds_total',
    help: 'Time spent in the round trips of gatehouse_cluster_lease_roundtrips_total, summed (seconds).',
    registers,
    collect: guard<Counter>('gatehouse_cluster_lease_roundtrip_seconds_total', function () {
      this.reset();
      const l = leases();
      if (l) this.inc(count(l.roundTripSeconds));
    }),
  });

  const restarts = new Counter({
    name: 'gatehouse_actor_restarts_total',
    help: 'Children restarted, by supervisor.',
    labelNames: ['supervisor'],
    registers,
  });

  function* backends(): Generator<{ labels: { upstream: string; backend: string }; healthy: boolean; breaker: number }> {
    for (const u of backend.upstreams().upstreams) {
      for (const b of u.backends) {
        yield { labels: { upstream: u.name, backend: b.address }, healthy: b.healthy, breaker: BREAKER_VALUE[b.breaker] ?? 0 };
      }
    }
  }

  new Gauge({
    name: 'gatehouse_backend_healthy',
    help: '1 when the backend passes its health checks, else 0.',
    labelNames: ['upstream', 'backend'],
    registers,
    collect: guard<Gauge>('gatehouse_backend_healthy', function () {
      this.reset();
      for (const b of backends()) this.set(b.labels, b.healthy ? 1 : 0);
    }),
  });

  new Gauge({
    name: 'gatehouse_breaker_state',
    help: 'Circuit breaker state per backend: 0 closed, 1 open, 2 half-open.',
    labelNames: ['upstream', 'backend'],
    registers,
    collect: guard<Gauge>('gatehouse_breaker_state', function () {
      this.reset();
      for (const b of backends()) this.set(b.labels, b.breaker);
    }),
  });

  // The hub: presence gauges from the main thread, frame and drop counters from the state table
  // (shards) plus the main thread's own drops, all read at scrape time.
  new Gauge({
    name: 'gatehouse_hub_clients',
    help: 'Hub clients registered (welcomed and not gone), per hub listener, across shards.',
    labelNames: ['listener'],
    registers,
    collect: guard<Gauge>('gatehouse_hub_clients', function () {
      this.reset();
      for (const c of backend.hubStats?.().clients ?? []) this.set({ listener: c.listener }, count(c.clients));
    }),
  });

  new Gauge({
    name: 'gatehouse_hub_users_online',
    help: 'Hub users online (a user goes offline when its last client is gone and the presence grace passed).',
    registers,
    collect: guard<Gauge>('gatehouse_hub_users_online', function () {
      this.set(count(backend.hubStats?.().usersOnline));
    }),
  });

  new Counter({
    name: 'gatehouse_hub_messages_total',
    help: 'Hub frames: direction "client_to_node" forwarded toward a node, "node_to_client" written to a client (one per client reached).',
    labelNames: ['direction'],
    registers,
    collect: guard<Counter>('gatehouse_hub_messages_total', function () {
      this.reset();
      const s = backend.hubStats?.();
      if (!s) return;
      this.inc({ direction: 'client_to_node' }, count(s.messages.clientToNode));
      this.inc({ direction: 'node_to_client' }, count(s.messages.nodeToClient));
    }),
  });

  new Counter({
    name: 'gatehouse_hub_dropped_total',
    help: 'Hub frames dropped or refused, by reason (queue_full, bad_request, node_unavailable, oversize, rate_limited, slow_consumer, bad_node_frame, no_client, late_response).',
    labelNames: ['reason'],
    registers,
    collect: guard<Counter>('gatehouse_hub_dropped_total', function () {
      this.reset();
      for (const [reason, n] of Object.entries(backend.hubStats?.().dropped ?? {})) this.inc({ reason }, count(n));
    }),
  });

  addHttpMetrics(registry, httpStats, guard);
  addTlsMetrics(registry, httpStats, () => backend.tlsStats?.(), guard);
  addProcessMetrics(registry);

  function recordRestart(supervisor: string): void {
    restarts.inc({ supervisor: String(supervisor) });
  }
  const onRestart = (msg: unknown): void => {
    const supervisor = (msg as { supervisor?: unknown } | null)?.supervisor;
    if (typeof supervisor === 'string') recordRestart(supervisor);
  };
  diagnostics.subscribe(RESTART_CHANNEL, onRestart);

  let closed = false;
  return {
    registry,
    recordRestart,
    async close() {
      if (closed) return;
      closed = true;
      diagnostics.unsubscribe(RESTART_CHANNEL, onRestart);
    },
  };
}

type Guard = <M>(metric: string, fn: (this: M) => void | Promise<void>) => (this: M) => Promise<void>;

/**
 * The HTTP metrics, from `backend.httpStats()` (shared by the scrape's collects). The histogram is summed over shards, so it is
 * not a prom-client `Histogram` (which only observes): it is a metric object of our own whose
 * `get()` returns the cumulative `_bucket` series (with `le="+Inf"`), `_sum` and `_count`, which
 * the registry serialises like any histogram.
 */
function addHttpMetrics(registry: Registry, httpStats: () => Promise<HttpStatsSnapshot | undefined>, guard: Guard): void {
  const registers = [registry];

  new Counter({
    name: 'gatehouse_http_requests_total',
    help: 'HTTP requests answered, per listener, route ("" when none matched) and status code, summed over shards.',
    labelNames: ['listener', 'route', 'code'],
    registers,
    collect: guard<Counter>('gatehouse_http_requests_total', async function () {
      const s = await httpStats();
      this.reset();
      for (const r of s?.routes ?? []) {
        for (const [code, n] of r.codes) this.inc({ listener: r.listener, route: r.route, code: String(code) }, count(n));
      }
    }),
  });

  new Counter({
    name: 'gatehouse_upstream_retries_total',
    help: 'HTTP requests sent to an upstream again after a failed try, per upstream, summed over shards.',
    labelNames: ['upstream'],
    registers,
    collect: guard<Counter>('gatehouse_upstream_retries_total', async function () {
      const s = await httpStats();
      this.reset();
      for (const r of s?.retries ?? []) this.inc({ upstream: r.upstream }, count(r.count));
    }),
  });

  const name = 'gatehouse_http_request_duration_seconds';
  const help = 'HTTP request duration in seconds (first request byte to last response byte), per listener and route, summed over shards.';
  type Sample = { metricName: string; labels: Record<string, string | number>; value: number };
  const read = guard<{ values: Sample[] }>(name, async function () {
    const s = await httpStats();
    // Built apart and added whole: a failure leaves no half-written series.
    const out: Sample[] = [];
    for (const r of s?.routes ?? []) {
      const labels = { listener: r.listener, route: r.route };
      let cumulative = 0;
      for (let i = 0; i < HTTP_DURATION_BUCKETS.length; i++) {
        cumulative += count(r.buckets[i]);
        out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: HTTP_DURATION_BUCKETS[i]! }, value: cumulative });
      }
      cumulative += count(r.buckets[HTTP_DURATION_BUCKETS.length]);
      out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: cumulative });
      out.push({ metricName: `${name}_sum`, labels, value: count(r.sum) });
      // _count is the +Inf bucket by definition.
      out.push({ metricName: `${name}_count`, labels, value: cumulative });
    }
    this.values = out;
  });
  const histogram = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    async get() {
      const into = { values: [] as Sample[] };
      await read.call(into);
      return { name, help, type: 'histogram', aggregator: 'sum', values: into.values };
    },
    reset() {},
  };
  registry.registerMetric(histogram as unknown as Metric);
}

/**
 * TLS: handshakes per listener and result (counted by the shards, summed at scrape), and from
 * the main thread, which reads the certificate files: rejected renewals and each certificate's
 * expiry.
 */
function addTlsMetrics(
  registry: Registry,
  httpStats: () => Promise<HttpStatsSnapshot | undefined>,
  tlsStats: () => { reloadErrors: Map<string, number>; upstreamReloadErrors?: Map<string, number>; expiry: Map<string, Map<string, number>> } | undefined,
  guard: Guard,
): void {
  const registers = [registry];
  new Counter({
    name: 'gatehouse_tls_handshakes_total',
    help: 'TLS handshakes with clients per listener: result "ok" (of which "resumed" also counts the resumed sessions) or "error" (failed, refused or timed out).',
    labelNames: ['listener', 'result'],
    registers,
    collect: guard<Counter>('gatehouse_tls_handshakes_total', async function () {
      const s = await httpStats();
      this.reset();
      for (const t of s?.tls ?? []) {
        this.inc({ listener: t.listener, result: 'ok' }, t.ok);
        this.inc({ listener: t.listener, result: 'error' }, t.error);
        this.inc({ listener: t.listener, result: 'resumed' }, t.resumed);
      }
    }),
  });
  new Counter({
    name: 'gatehouse_tls_reload_errors_total',
    help: 'Renewed certificate files that failed their check (the previous ones stayed in use): a listener\'s (label listener) or an upstream\'s tls files (label upstream).',
    labelNames: ['listener', 'upstream'],
    registers,
    collect: guard<Counter>('gatehouse_tls_reload_errors_total', function () {
      this.reset();
      const s = tlsStats();
      for (const [listener, n] of s?.reloadErrors ?? []) this.inc({ listener }, n);
      for (const [upstream, n] of s?.upstreamReloadErrors ?? []) this.inc({ upstream }, n);
    }),
  });
  new Gauge({
    name: 'gatehouse_tls_certificate_expiry_timestamp_seconds',
    help: 'When each listener certificate expires (notAfter, seconds since the epoch); name is its first server name.',
    labelNames: ['listener', 'name'],
    registers,
    collect: guard<Gauge>('gatehouse_tls_certificate_expiry_timestamp_seconds', function () {
      this.reset();
      for (const [listener, m] of tlsStats()?.expiry ?? []) for (const [name, t] of m) this.set({ listener, name }, t);
    }),
  });
}
