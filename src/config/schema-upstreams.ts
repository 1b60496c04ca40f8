/** The `upstreams:` part of the config schema. */
import { z } from 'zod';
import { duration, hostPort, int, name, positiveDuration, urlPath } from './schema-common.ts';
import type { BackendConfig } from './types.ts';
import { sendProxyProtocol, upstreamTls } from './schema-tls.ts';

/** A backend: `{ address, weight }`, or just the address as a string. */
const backend = z.preprocess(
  (v) => (typeof v === 'string' || typeof v === 'number' ? { address: v } : v),
  z
    .strictObject({ address: hostPort(), weight: int(0).default(1) })
    .transform((b): BackendConfig => ({ ...b.address, weight: b.weight })),
);

const healthCheck = z.strictObject({
  enabled: z.boolean().default(true),
  type: z.enum(['tcp', 'http']).default('tcp'),
  path: urlPath().default('/healthz'),
  interval: positiveDuration().default(1_000),
  timeout: positiveDuration().default(500),
  unhealthyThreshold: int(1).default(3),
  healthyThreshold: int(1).default(2),
});

const circuitBreaker = z.strictObject({
  enabled: z.boolean().default(true),
  failureThreshold: int(1).default(5),
  successThreshold: int(1).default(1),
  openFor: positiveDuration().default(30_000),
});

// idleTimeout below a typical backend keep-alive (Node's 5s), so the pool closes first.
const pool = z.strictObject({
  maxConnections: int(1).default(256),
  maxIdle: int(0).optional(),
  idleTimeout: duration().default(4_000),
});

/**
 * One upstream: a named set of backends (static and/or from service discovery), how to pick
 * one, how to probe them, and when to stop sending to a failing one.
 *
 * @example
 * upstreamSchema.parse({ name: 'app', backends: ['127.0.0.1:9001'] }).connectTimeout; // 2000
 */
export const upstreamSchema = z.strictObject({
  name: name(),
  balance: z.enum(['round_robin', 'weighted_round_robin', 'least_connections', 'p2c']).default('round_robin'),
  backends: z.array(backend).default([]),
  discovery: z.strictObject({ service: z.string().min(1), tags: z.array(z.string().min(1)).optional() }).optional(),
  healthCheck: healthCheck.prefault({}),
  circuitBreaker: circuitBreaker.prefault({}),
  pool: pool.prefault({}),
  connectTimeout: positiveDuration().default(2_000),
  connectRetries: int(0).default(2),
  tls: upstreamTls.optional(),
  sendProxyProtocol: sendProxyProtocol.optional(),
});
