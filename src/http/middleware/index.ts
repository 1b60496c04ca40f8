/**
 * The request/response middleware of the HTTP listener: pure functions over the codec's flat
 * header list, compiled once per config snapshot and called per request in this order:
 *
 * 1. `requestIdOf` (before routing, so that a 404 carries the id too);
 * 2. route the request; a CORS preflight (`isPreflight`) on a route with `cors` is answered by
 *    `cors.preflight` whatever the route's methods, and goes no further;
 * 3. `prepareUpstream`: forwarded headers and the client address, hop-by-hop removal, the
 *    route's `headers.request`; `upstreamTarget` for the target (`stripPrefix`);
 * 4. `serializeRequestHead` with the body framing the proxy chose;
 * 5. on the response, `prepareResponse` (hop-by-hop, `headers.response`, CORS, `x-request-id`)
 *    then `serializeResponseHead`.
 * Gateway-made answers at any step: `gatewayAnswer`.
 *
 * @example
 * const lm = compileListenerMiddleware({ trustedProxies: ['10.0.0.0/8'] });
 * const rm = compileRouteMiddleware(route);
 * const ex = new Exchange(socket.remoteAddress!, false, 8080, lm.forwarded);
 * ex.requestId = requestIdOf(head.headers, lm.ids);
 * prepareUpstream(head.headers, head.host, ex, rm.rules, 0, out);
 * const buf = serializeRequestHead(head.method, upstreamTarget(head.target, rm.strip), out, NO_BODY);
 */
import type { RouteConfig } from '../../config/types.ts';
import { compileCors, type CompiledCors } from './cors.ts';
import { compileForwarded, type CompiledForwarded, type ForwardedConfig } from './forwarded.ts';
import { compileHeaderRules, type HeaderRules } from './headers.ts';
import { RequestIdGenerator } from './request-id.ts';

export { ERROR_STATUS, gatewayAnswer, reasonPhrase, type AnswerOptions, type GatewayErrorCode } from './answers.ts';
export { CompiledCors, compileCors, isPreflight } from './cors.ts';
export { clientAddress, compileForwarded, forwardedForValue, joinedForwardedFor, type CompiledForwarded, type ForwardedConfig } from './forwarded.ts';
export { AUTHENTICATED, Exchange, PASS_UPGRADE, compileHeaderRules, prepareResponse, prepareUpstream, upstreamTarget, type HeaderRules } from './headers.ts';
export { CidrMatcher, compileCidrs, isIpAddress, unmapAddress } from './ip.ts';
export { MAX_REQUEST_ID, RequestIdGenerator, isValidRequestId, requestIdOf } from './request-id.ts';
export { CHUNKED, NO_BODY, serializeRequestHead, serializeResponseHead } from './serialize.ts';

/**
 * The per-listener (per shard) part: forwarded-header policy and the request id generator.
 *
 * @example
 * const lm = compileListenerMiddleware({ xForwardedFor: 'replace' });
 */
export interface ListenerMiddleware {
  forwarded: CompiledForwarded;
  ids: RequestIdGenerator;
}

/**
 * Compiles a listener's middleware; throws a `TypeError` on an invalid `trustedProxies` CIDR.
 *
 * @example
 * compileListenerMiddleware({ trustedProxies: ['127.0.0.1'] }).forwarded.trusted.size; // 1
 */
export function compileListenerMiddleware(cfg: ForwardedConfig, ids = new RequestIdGenerator()): ListenerMiddleware {
  return { forwarded: compileForwarded(cfg), ids };
}

/**
 * The per-route part: header rules, CORS policy and the prefix to strip.
 *
 * @example
 * const rm = compileRouteMiddleware(route); // rm.strip === '/v1' with stripPrefix: true
 */
export interface RouteMiddleware {
  rules: HeaderRules;
  cors: CompiledCors | undefined;
  /** The `pathPrefix` to strip, when the route has `stripPrefix`. */
  strip: string | undefined;
}

/**
 * Compiles a route's middleware, once per config snapshot.
 *
 * @example
 * compileRouteMiddleware({ ...route, cors: { origins: ['*'], credentials: false } }).cors?.allows('https://x'); // true
 */
export function compileRouteMiddleware(route: RouteConfig): RouteMiddleware {
  return {
    rules: compileHeaderRules(route.headers),
    cors: route.cors && compileCors(route.cors, route.match.methods),
    strip: route.stripPrefix ? route.match.pathPrefix : undefined,
  };
}
