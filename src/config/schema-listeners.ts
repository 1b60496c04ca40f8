/** The `listeners:` part of the config schema: tcp, http and hub listeners. */
import { z } from 'zod';
import { auth, cidr, duration, int, listenAddress, name, positiveDuration, rateLimit, size, sizeOrNone, urlPath, urlWith } from './schema-common.ts';
import { routesSchema } from './schema-routes.ts';
import { listenerTls, proxyProtocol } from './schema-tls.ts';

const common = {
  name: name(),
  listen: listenAddress(),
  maxConnections: int(1).default(10_000),
  maxConnectionsPerIp: int(0).default(0),
  rateLimit: rateLimit().optional(),
  idleTimeout: duration().default(300_000),
  tls: listenerTls.optional(),
  proxyProtocol: proxyProtocol.optional(),
};

const tcp = z.strictObject({
  protocol: z.literal('tcp'),
  ...common,
  upstream: name('required: a tcp listener needs an upstream'),
});

const http = z.strictObject({
  protocol: z.literal('http'),
  ...common,
  routes: routesSchema,
  trustedProxies: z.array(cidr()).default([]),
  xForwardedFor: z.enum(['append', 'replace']).default('append'),
  maxHeaderSize: size().default(16 * 1024),
  maxBodySize: sizeOrNone().default(0),
  headersTimeout: positiveDuration().default(10_000),
  keepAliveTimeout: positiveDuration().default(60_000),
  maxRequestsPerConnection: int(0).default(0),
  accessLog: z.union([z.boolean(), z.strictObject({ sample: z.number().min(0).max(1) })]).default(false),
});

const hub = z.strictObject({
  protocol: z.literal('hub'),
  ...common,
  path: urlPath().default('/connect'),
  // Optional only with tls.clientAuth required: the verified certificate's CN is then the user id (cross-checked).
  auth: auth().optional(),
  nodes: z.array(z.strictObject({ id: name(), url: urlWith(['ws:', 'wss:']) })).min(1).optional(),
  discovery: z.strictObject({ service: z.string().min(1), path: urlPath().default('/'), tags: z.array(z.string().min(1)).optional() }).optional(),
  maxClientsPerUser: int(1).default(16),
  maxMessageSize: size().default(64 * 1024),
  sendQueue: z
    .strictObject({
      maxMessages: int(1).default(1_000),
      onOverflow: z.enum(['close', 'drop-oldest']).default('close'),
    })
    .prefault({}),
  presenceGrace: duration().default(100),
  requestTimeout: positiveDuration().default(10_000),
  pingInterval: positiveDuration().default(20_000),
  // Cluster mode: the last `size` pushes to each user, kept `ttl`, for clients that `resume` (docs/hub-protocol.md).
  history: z.strictObject({ size: int(1).max(10_000).default(100), ttl: positiveDuration().default(300_000) }).optional(),
  /** Inbound frames per client (a token bucket; a client that keeps flooding is closed with 1008). */
  clientRateLimit: rateLimit().default({ perSecond: 100, burst: 200 }),
});

/**
 * One listener, chosen by `protocol`: `tcp` proxies bytes to an upstream, `http` routes requests,
 * `hub` terminates WebSocket clients and relays them to nodes.
 *
 * @example
 * listenerSchema.parse({ name: 'in', protocol: 'tcp', listen: 15000, upstream: 'app' }).listen;
 * // { host: '0.0.0.0', port: 15000, address: '15000' }
 */
export const listenerSchema = z.discriminatedUnion('protocol', [tcp, http, hub]);
