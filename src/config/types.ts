/**
 * The normalized configuration: what `parseConfig` returns once the YAML is valid. Defaults are
 * applied, durations are milliseconds, sizes are bytes, addresses are parsed. The reference for
 * every key is `docs/configuration.md`.
 */
import type { HostPort } from './units.ts';

export type { HostPort } from './units.ts';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type Balance = 'round_robin' | 'weighted_round_robin' | 'least_connections' | 'p2c';
export type RestartType = 'permanent' | 'transient' | 'temporary';
export type JwtAlgorithm =
  | 'HS256' | 'HS384' | 'HS512' | 'RS256' | 'RS384' | 'RS512'
  | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';

export interface AdminConfig {
  listen: HostPort;
  /** When set, every admin route but /healthz and /readyz needs `Authorization: Bearer TOKEN`. */
  token?: string;
}

export interface RuntimeConfig {
  /** Data-plane shards; 0 runs the data plane in the main thread. */
  workers: number;
  debug: boolean;
  shutdownTimeout: number;
  /** `light`: our own small actor per connection; `xstate`: a full xstate actor (bench knob). */
  connectionActor: 'light' | 'xstate';
  /** Milliseconds without a shard thread's heartbeat after which it is killed as hung; 0 turns it off. */
  watchdog: number;
  /** Reload when the config file's content changes (debounced). */
  watchConfig: boolean;
}

export interface ClusterConfig {
  /** `redis://`, `rediss://` or `redis+sentinel://` URL (src/config/redis-url.ts). */
  redis: string;
  /** Names this gateway instance (the hub's `gateId`); defaults to the host name. */
  instanceId: string;
  /** Starts every key and channel (`gatehouse:`): instances with the same prefix share state. */
  keyPrefix: string;
  /** How often this instance heartbeats (ms). */
  heartbeat: number;
  /** An instance silent this long is dead (ms). */
  deadAfter: number;
}

export interface BackendConfig extends HostPort {
  weight: number;
}

export interface HealthCheckConfig {
  enabled: boolean;
  type: 'tcp' | 'http';
  /** Request path of `http` checks. */
  path: string;
  interval: number;
  timeout: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
}

export interface CircuitBreakerConfig {
  enabled: boolean;
  failureThreshold: number;
  successThreshold: number;
  openFor: number;
}

export interface UpstreamConfig {
  name: string;
  balance: Balance;
  backends: BackendConfig[];
  /** Backends from the service registry (instances with all of `tags`), added to `backends`. */
  discovery?: { service: string; tags?: string[] };
  healthCheck: HealthCheckConfig;
  circuitBreaker: CircuitBreakerConfig;
  /** The HTTP keep-alive pool per backend and shard; `maxIdle` absent: `maxConnections`. */
  pool: { maxConnections: number; maxIdle?: number; idleTimeout: number };
  connectTimeout: number;
  connectRetries: number;
  /** TLS origination to the backends. */
  tls?: UpstreamTlsConfig;
  /** A PROXY protocol header sent first on every backend connection. */
  sendProxyProtocol?: 'v1' | 'v2';
}

/** Upstream `tls`; file paths are absolute once parsed. */
export interface UpstreamTlsConfig {
  serverName?: string;
  ca?: string;
  cert?: string;
  key?: string;
  verify: boolean;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
}

/** Listener `tls`; file paths are absolute once parsed. */
export interface ListenerTlsConfig {
  certificates: { cert: string; key: string; serverNames: string[] }[];
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  alpn: string[];
  clientAuth?: { ca: string; required: boolean };
  /** ms */
  handshakeTimeout: number;
}

/** Listener `proxyProtocol`: required from `trustedProxies`, refused from anyone else. */
export interface ProxyProtocolConfig {
  accept: 'v1' | 'v2' | 'any';
  trustedProxies: string[];
}

/** A token bucket: `perSecond` tokens added per second, at most `burst` held; it starts full. */
export interface RateLimitConfig {
  perSecond: number;
  burst: number;
}

/** What a route's rate limit is counted per: `ip`, `header:NAME` (lower-cased) or `jwt:CLAIM`. */
export type RateLimitKey = 'ip' | `header:${string}` | `jwt:${string}`;

export interface JwtConfig {
  /** Exactly one of `secret`, `publicKey` (PEM) and `jwksUrl` is set. */
  secret?: string;
  publicKey?: string;
  jwksUrl?: string;
  issuer?: string;
  audience?: string[];
  algorithms: JwtAlgorithm[];
  /** Skew accepted on `exp` and `nbf`, in ms; the schema sets 30 s. Optional for configs built in code. */
  clockSkew?: number;
  /** A token without `exp` is refused unless this is `false`; the schema sets `true`. */
  requireExp?: boolean;
  /** HTTP routes: claim name -> request header set from it (the incoming header is removed first). */
  forwardClaims?: Record<string, string>;
}

export interface AuthConfig {
  jwt: JwtConfig;
}

export interface CorsConfig {
  /** Allowed origins, or `['*']`. */
  origins: string[];
  credentials: boolean;
  /** Seconds (the `Access-Control-Max-Age` header), not a duration. */
  maxAge?: number;
  methods?: string[];
  headers?: string[];
  exposeHeaders?: string[];
}

export interface RouteConfig {
  name: string;
  match: { host?: string; pathPrefix: string; methods?: string[] };
  /** Exactly one of `upstream` and `split` is set. */
  upstream?: string;
  split?: { upstream: string; weight: number }[];
  /** With `split`: keep a client on one upstream, keyed by a header or a cookie. */
  sticky?: { header?: string; cookie?: string };
  stripPrefix: boolean;
  auth?: AuthConfig;
  rateLimit?: RateLimitConfig & { key: RateLimitKey };
  cors?: CorsConfig;
  /** Until the response head (ms): 504 after it. */
  timeout: number;
  /** The longest gap between body bytes once the exchange streams (ms). */
  idleTimeout: number;
  retries: number;
  /** What `retries` apply to; a connect failure is retried for any method, the rest for idempotent methods only. */
  retryOn: ('connect-failure' | 'reset' | 502 | 503 | 504)[];
  websocket: boolean;
  /** Header rules per direction: `set` names map to values (replacing any sent), `remove` names. */
  headers?: { request?: HeaderRulesConfig; response?: HeaderRulesConfig };
}

export interface HeaderRulesConfig {
  set?: Record<string, string>;
  remove?: string[];
}

interface ListenerBase {
  name: string;
  listen: HostPort;
  maxConnections: number;
  /** 0 means no limit. */
  maxConnectionsPerIp: number;
  /** New connections, for the listener as a whole across shards. */
  rateLimit?: RateLimitConfig;
  /** 0 means no idle timeout. */
  idleTimeout: number;
  tls?: ListenerTlsConfig;
  proxyProtocol?: ProxyProtocolConfig;
}

export interface TcpListenerConfig extends ListenerBase {
  protocol: 'tcp';
  upstream: string;
}

export interface HttpListenerConfig extends ListenerBase {
  protocol: 'http';
  routes: RouteConfig[];
  /** Peers whose X-Forwarded-* headers are believed (CIDRs). */
  trustedProxies: string[];
  xForwardedFor: 'append' | 'replace';
  /** The whole request head, in bytes. */
  maxHeaderSize: number;
  /** 0 means no limit. */
  maxBodySize: number;
  /** The whole request head must arrive within it (ms). */
  headersTimeout: number;
  /** Between requests on a kept-alive connection (ms). */
  keepAliveTimeout: number;
  /** 0 means no limit. */
  maxRequestsPerConnection: number;
  accessLog: boolean | { sample: number };
}

export interface HubNodeConfig {
  id: string;
  url: string;
}

export interface HubListenerConfig extends ListenerBase {
  protocol: 'hub';
  path: string;
  /** Absent: the listener has `tls.clientAuth` required, and a client's user id is its certificate's CN. */
  auth?: AuthConfig;
  /** Exactly one of `nodes` and `discovery` is set. */
  nodes?: HubNodeConfig[];
  /** Nodes from the service registry: `ws://ADDRESS` + `path` for each instance. */
  discovery?: { service: string; path: string; tags?: string[] };
  maxClientsPerUser: number;
  maxMessageSize: number;
  sendQueue: { maxMessages: number; onOverflow: 'close' | 'drop-oldest' };
  presenceGrace: number;
  requestTimeout: number;
  pingInterval: number;
  /** Cluster mode: pushes to a user are kept in a Redis stream per user (`size` entries, `ttl` ms) for `resume`. */
  history?: { size: number; ttl: number };
  /** Inbound frames per client. */
  clientRateLimit: RateLimitConfig;
}

export type ListenerConfig = TcpListenerConfig | HttpListenerConfig | HubListenerConfig;

export interface ActorConfig {
  name: string;
  /** Absolute path for `./`, `../` and absolute specifiers (resolved against the config file's directory); bare package names unchanged. */
  module: string;
  /** `module` as written in the config. */
  moduleSpecifier: string;
  /** `permanent` (default): always restarted; `transient`: after a crash only; `temporary`: never. */
  restart: RestartType;
  /** Most restarts within `period` before this actor alone is given up (status `failed`); default 3. */
  maxRestarts: number;
  /** The window of `maxRestarts`, in ms; default 5000. */
  period: number;
  options: Record<string, unknown>;
}

/** `telemetry.otlp`: spans of HTTP requests exported with OTLP/HTTP (JSON). */
export interface OtlpConfig {
  /** The collector's traces URL (`http://127.0.0.1:4318/v1/traces`). */
  endpoint: string;
  /** Sent with every export request (an API key, say). */
  headers: Record<string, string>;
  /** The `service.name` resource attribute; default `gatehouse`. */
  serviceName: string;
  /** Share of new traces sampled, 0 to 1 (parent-based: a caller's decision in `traceparent` wins). */
  sampleRatio: number;
}

export interface TelemetryConfig {
  /** Absent: no tracing. */
  otlp?: OtlpConfig;
}

/**
 * The whole normalized configuration.
 *
 * @example
 * const cfg: GatehouseConfig = parseConfig('listeners: []', 'inline.yaml');
 * cfg.runtime.shutdownTimeout; // 30_000
 */
export interface GatehouseConfig {
  admin: AdminConfig;
  runtime: RuntimeConfig;
  log: { level: LogLevel };
  cluster?: ClusterConfig;
  upstreams: UpstreamConfig[];
  listeners: ListenerConfig[];
  actors: ActorConfig[];
  telemetry?: TelemetryConfig;
}
