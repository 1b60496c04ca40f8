/**
 * An http listener's routes compiled for one config snapshot: the router, and per route its
 * middleware, split, JWT verifier, rate limit and retry policy. Built once per listener per
 * reload and shared by its connections; a request holds the snapshot it started with.
 */
import type { RouteConfig } from '../config/types.ts';
import { createJwtVerifier, type JwtVerifier } from '../auth/jwt.ts';
import { compileListenerMiddleware, compileRouteMiddleware, type ListenerMiddleware, type RouteMiddleware } from './middleware/index.ts';
import type { RequestIdGenerator } from './middleware/request-id.ts';
import { compileRouter, type RouteMatch, type Router } from './router.ts';
import type { RequestHead } from './codec/head.ts';
import { isPreflight } from './middleware/cors.ts';
import { splitFor, stickyValueOf, type Split } from './split.ts';
import type { ShardHttpSettings } from '../workers/shard-config.ts';

/** Methods a reset or a `retryOn` status may be retried for (RFC 9110 §9.2.2 idempotent methods). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** `retryOn` as bits, tested per failure. */
export const RetryOn = { ConnectFailure: 1, Reset: 2, S502: 4, S503: 8, S504: 16 } as const;

/** What the rate limit of a route counts by. */
export const LimitKey = { Ip: 0, Header: 1, Claim: 2 } as const;

/**
 * One route, ready for the request path.
 *
 * @example
 * const r = routes.byIndex[m.index];
 * if (r.verifier) await r.verifier.verify(token);
 */
export interface CompiledRoute {
  readonly config: RouteConfig;
  readonly index: number;
  readonly name: string;
  readonly mw: RouteMiddleware;
  readonly split: Split | undefined;
  readonly verifier: JwtVerifier | undefined;
  /** `rateLimit` as GCRA parameters (ns), or undefined. */
  readonly limit: { intervalNs: bigint; burstNs: bigint; kind: number; name: string } | undefined;
  readonly retryOn: number;
  readonly retries: number;
  readonly timeoutMs: number;
  readonly idleTimeoutMs: number;
}

/**
 * The compiled routes of one listener snapshot.
 *
 * @example
 * const routes = compileRoutes(settings, ids);
 * const m = routes.router.match(head.host, head.target, head.method);
 */
export interface CompiledRoutes {
  readonly router: Router;
  readonly byIndex: readonly CompiledRoute[];
  readonly listener: ListenerMiddleware;
  readonly settings: ShardHttpSettings;
}

function limitOf(r: RouteConfig): CompiledRoute['limit'] {
  const rl = r.rateLimit;
  if (!rl) return undefined;
  const intervalNs = BigInt(Math.max(1, Math.round(1e9 / rl.perSecond)));
  const key = rl.key;
  const kind = key === 'ip' ? LimitKey.Ip : key.startsWith('header:') ? LimitKey.Header : LimitKey.Claim;
  return { intervalNs, burstNs: intervalNs * BigInt(rl.burst), kind, name: kind === LimitKey.Ip ? '' : key.slice(key.indexOf(':') + 1) };
}

function retryOnBits(r: RouteConfig): number {
  let bits = 0;
  for (const x of r.retryOn) {
    bits |= x === 'connect-failure' ? RetryOn.ConnectFailure : x === 'reset' ? RetryOn.Reset : x === 502 ? RetryOn.S502 : x === 503 ? RetryOn.S503 : RetryOn.S504;
  }
  return bits;
}

/**
 * Compiles a listener's routes. Throws on what `gatehouse check` already refuses (a JWT config
 * that cannot verify, a bad `trustedProxies` CIDR).
 *
 * @example
 * const routes = compileRoutes(listener.http!, new RequestIdGenerator());
 */
export function compileRoutes(settings: ShardHttpSettings, ids: RequestIdGenerator): CompiledRoutes {
  const byIndex = settings.routes.map((r, index): CompiledRoute => ({
    config: r,
    index,
    name: r.name,
    mw: compileRouteMiddleware(r),
    split: splitFor(r),
    verifier: r.auth && createJwtVerifier(r.auth.jwt),
    limit: limitOf(r),
    retryOn: retryOnBits(r),
    retries: r.retries,
    timeoutMs: r.timeout,
    idleTimeoutMs: r.idleTimeout,
  }));
  return {
    router: compileRouter(settings.routes),
    byIndex,
    listener: compileListenerMiddleware({ trustedProxies: settings.trustedProxies, xForwardedFor: settings.xForwardedFor }, ids),
    settings,
  };
}

/** True when a failed request of `method` may be sent again after a reset or a retryable status. */
export function idempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/** The first value of header `name` (lowercase) in a flat list. */
export function headerValue(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
  return undefined;
}

/**
 * The upstream name for a request on `route`: its `upstream`, or its split's pick (sticky by
 * header or cookie when configured). `undefined` when a split has only zero weights.
 *
 * @example
 * const name = upstreamFor(route, head.headers);
 */
export function upstreamFor(route: CompiledRoute, headers: readonly string[]): string | undefined {
  if (route.split === undefined) return route.config.upstream;
  const sticky = route.config.sticky === undefined ? undefined : stickyValueOf(route.config, (n) => headerValue(headers, n));
  return route.split.pick(sticky);
}

/**
 * The route of a request head, and whether it is a CORS preflight. A preflight that no route
 * takes as OPTIONS (405) is routed by the method it asks about (`Access-Control-Request-Method`),
 * but only to a route with `cors`, which answers it itself: any other route does not take OPTIONS.
 *
 * @example
 * const { match, preflight } = routeRequest(routes, head);
 * if (preflight && match.ok && routes.byIndex[match.index].mw.cors) answerPreflight();
 */
export function routeRequest(routes: CompiledRoutes, head: RequestHead): { match: RouteMatch; preflight: boolean } {
  const m = routes.router.match(head.host, head.target, head.method);
  const preflight = isPreflight(head.method, head.headers);
  if (m.ok || m.status !== 405 || !preflight) return { match: m, preflight };
  const want = headerValue(head.headers, 'access-control-request-method');
  const pm = want === undefined ? undefined : routes.router.match(head.host, head.target, want);
  return { match: pm !== undefined && pm.ok && routes.byIndex[pm.index]!.mw.cors ? pm : m, preflight };
}
