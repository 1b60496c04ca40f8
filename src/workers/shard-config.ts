import type { ShardTls } from '../tls/listener-tls.ts';
import type { ShardUpstreamTls } from '../tls/upstream-tls.ts';
import type { GatehouseConfig, HttpListenerConfig, JwtConfig, OtlpConfig, RouteConfig } from '../config/types.ts';

/**
 * What a shard needs to run its listeners: a plain, structured-clonable snapshot made by the main
 * thread from the validated config, with state-table slots assigned. Shards never read YAML.
 */
export interface ShardBackend {
  address: string;
  host: string;
  port: number;
  weight: number;
  /** Row in the state table. */
  slot: number;
}

export interface ShardUpstream {
  name: string;
  balance: string;
  backends: ShardBackend[];
  connectTimeoutMs: number;
  connectRetries: number;
  /**
   * Consecutive failed connects (seen by any shard) after which the shard asks the backend's
   * BreakerActor to open; 0 when the upstream has no circuit breaker.
   */
  failureThreshold: number;
  /** The HTTP keep-alive pool per backend on each shard (http listeners). */
  pool?: { maxConnections: number; maxIdle?: number; idleTimeoutMs: number };
  /** TLS to the backends, with the files' contents (read by the main thread). */
  tls?: ShardUpstreamTls;
  /** A PROXY protocol header first on every backend connection (tcp listeners). */
  sendProxyProtocol?: 'v1' | 'v2';
}

export interface ShardListener {
  name: string;
  protocol: 'tcp' | 'http' | 'hub';
  host: string;
  port: number;
  upstream: string | undefined;
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** New connections for the listener as a whole (a GCRA cell in the state table); none when absent. */
  rateLimit?: { perSecond: number; burst: number };
  idleTimeoutMs: number;
  /** Row in the state table. */
  slot: number;
  /** `protocol: hub` only: what the shard's HubListenerActor and its ClientProxyActors need. */
  hub?: ShardHubSettings;
  /** `protocol: http` only: routes and the HTTP keys of the listener. */
  http?: ShardHttpSettings;
  /** TLS termination: certificates (read by the main thread), options and the shared ticket keys. */
  tls?: ShardTls;
  /** PROXY protocol from the load balancers in `trustedProxies`. */
  proxyProtocol?: { accept: 'v1' | 'v2' | 'any'; trustedProxies: string[] };
}

/** An http listener's data-plane settings (durations in ms). */
export interface ShardHttpSettings {
  routes: RouteConfig[];
  trustedProxies: string[];
  xForwardedFor: 'append' | 'replace';
  maxHeaderSize: number;
  maxBodySize: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxRequestsPerConnection: number;
  /** Share of requests written to the access log: 0 (off) to 1 (every request). */
  accessLogSample: number;
}

/** The shard settings of an http listener's config. */
function httpSettings(l: HttpListenerConfig): ShardHttpSettings {
  return {
    routes: l.routes,
    trustedProxies: l.trustedProxies,
    xForwardedFor: l.xForwardedFor,
    maxHeaderSize: l.maxHeaderSize,
    maxBodySize: l.maxBodySize,
    headersTimeoutMs: l.headersTimeout,
    keepAliveTimeoutMs: l.keepAliveTimeout,
    maxRequestsPerConnection: l.maxRequestsPerConnection,
    accessLogSample: l.accessLog === true ? 1 : l.accessLog === false ? 0 : l.accessLog.sample,
  };
}

/** A hub listener's data-plane settings (node streams and presence live in the main thread). */
export interface ShardHubSettings {
  /** The WebSocket path clients connect to (`/connect`). */
  path: string;
  /** Absent: the user id is the verified client certificate's CN (`tls.clientAuth` required). */
  jwt?: JwtConfig;
  maxClientsPerUser: number;
  /** Bytes of one frame's payload; larger frames close the client with 1009. */
  maxMessageSize: number;
  sendQueue: { maxMessages: number; onOverflow: 'close' | 'drop-oldest' };
  pingIntervalMs: number;
  /** Inbound frames per client (token bucket). */
  clientRateLimit: { perSecond: number; burst: number };
  /** Cluster mode: `maxClientsPerUser` also holds across instances (the main thread asks Redis at each admission). */
  cluster?: boolean;
}

export interface ShardConfig {
  listeners: ShardListener[];
  upstreams: ShardUpstream[];
  connectionActor: 'light' | 'xstate';
  shutdownTimeoutMs: number;
  debug: boolean;
  /** Forward actor events to the main thread (someone listens: debug mode or a custom actor). */
  actorEvents?: boolean;
  logLevel: string;
  /**
   * How long the main thread waits for a heartbeat of this shard's thread before it counts the
   * thread as hung (`runtime.watchdog`); 0 turns the watchdog off. Absent: {@link DEFAULT_WATCHDOG_MS}.
   */
  watchdogMs?: number;
  /**
   * `POST /drain` is in effect: listeners do not accept (they are bound again by `POST /undrain`),
   * open connections go on. Listeners started meanwhile (a restarted shard) start paused.
   */
  paused?: boolean;
  /** `telemetry.otlp`: each shard traces its HTTP requests and exports the spans itself. Absent: off. */
  telemetry?: OtlpConfig;
}

/** `runtime.watchdog` when the config does not say. */
export const DEFAULT_WATCHDOG_MS = 5_000;

/**
 * How often a shard thread bumps its heartbeat counter: a tenth of the watchdog's limit (so a
 * busy but live thread is never mistaken for a hung one), between 10 ms and 1 s.
 */
export function heartbeatIntervalMs(c: Pick<ShardConfig, 'watchdogMs'>): number {
  const limit = c.watchdogMs ?? DEFAULT_WATCHDOG_MS;
  return Math.min(1_000, Math.max(10, Math.floor((limit || DEFAULT_WATCHDOG_MS) / 10)));
}

/** Splits `host:port` / `[v6]:port`. */
export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (!m) throw new RangeError(`bad address ${address}`);
  return { host: m[1]!, port: Number(m[2]) };
}

/** How the main thread maps names to state-table rows and port-0 listeners to their bound port. */
export interface SlotLookup {
  listenerSlot(name: string): number;
  backendSlot(upstream: string, address: string): number;
  resolvedPort(listener: string): number | undefined;
  /** The TLS material of a listener with `tls` (the main thread reads and watches the files). */
  listenerTls?(listener: string): ShardTls | undefined;
  /** The TLS material of an upstream with `tls`. */
  upstreamTls?(upstream: string): ShardUpstreamTls | undefined;
}

/**
 * The shard snapshot of a validated config: every listener with its protocol's settings, and
 * every upstream.
 *
 * @example
 * worker.postMessage(toShardConfig(config, slots));
 */
export function toShardConfig(cfg: GatehouseConfig, slots: SlotLookup): ShardConfig {
  return {
    listeners: cfg.listeners
      .map((l) => ({
        name: l.name,
        protocol: l.protocol,
        host: l.listen.host,
        port: l.listen.port === 0 ? (slots.resolvedPort(l.name) ?? 0) : l.listen.port,
        upstream: l.protocol === 'tcp' ? l.upstream : undefined,
        maxConnections: l.maxConnections,
        maxConnectionsPerIp: l.maxConnectionsPerIp,
        ...(l.rateLimit && { rateLimit: { perSecond: l.rateLimit.perSecond, burst: l.rateLimit.burst } }),
        idleTimeoutMs: l.idleTimeout,
        slot: slots.listenerSlot(l.name),
        ...(l.tls && slots.listenerTls && { tls: slots.listenerTls(l.name) }),
        ...(l.proxyProtocol && { proxyProtocol: { accept: l.proxyProtocol.accept, trustedProxies: [...l.proxyProtocol.trustedProxies] } }),
        ...(l.protocol === 'http' && { http: httpSettings(l) }),
        ...(l.protocol === 'hub' && {
          hub: {
            path: l.path,
            ...(l.auth && { jwt: l.auth.jwt }),
            maxClientsPerUser: l.maxClientsPerUser,
            maxMessageSize: l.maxMessageSize,
            sendQueue: { ...l.sendQueue },
            pingIntervalMs: l.pingInterval,
            clientRateLimit: { perSecond: l.clientRateLimit.perSecond, burst: l.clientRateLimit.burst },
            ...(cfg.cluster && { cluster: true }),
          },
        }),
      })),
    upstreams: cfg.upstreams.map((u) => ({
      name: u.name,
      balance: u.balance,
      connectTimeoutMs: u.connectTimeout,
      connectRetries: u.connectRetries,
      failureThreshold: u.circuitBreaker.enabled ? u.circuitBreaker.failureThreshold : 0,
      pool: { maxConnections: u.pool.maxConnections, maxIdle: u.pool.maxIdle, idleTimeoutMs: u.pool.idleTimeout },
      ...(u.tls && slots.upstreamTls && { tls: slots.upstreamTls(u.name) }),
      ...(u.sendProxyProtocol && { sendProxyProtocol: u.sendProxyProtocol }),
      backends: u.backends.map((b) => ({ address: b.address, host: b.host, port: b.port, weight: b.weight, slot: slots.backendSlot(u.name, b.address) })),
    })),
    connectionActor: cfg.runtime.connectionActor,
    shutdownTimeoutMs: cfg.runtime.shutdownTimeout,
    debug: cfg.runtime.debug,
    logLevel: cfg.log.level,
    watchdogMs: cfg.runtime.watchdog,
    ...(cfg.telemetry?.otlp && { telemetry: cfg.telemetry.otlp }),
  };
}
