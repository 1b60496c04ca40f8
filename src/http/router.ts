/**
 * The HTTP router, compiled once per config snapshot from a listener's `routes`. Precedence:
 * host tier first (exact, then `*.suffix` from the longest suffix, then routes without host; the
 * next tier only when no route of this one fits the path), then the longest `pathPrefix` on a
 * segment boundary, then a route listing the method over one without `methods`. Every answer is
 * an object built at compile time (a 405 on its first use), so `match` allocates nothing beyond
 * the normalized host.
 */
import type { RouteConfig } from '../config/types.ts';
import { HTTP_METHODS } from '../config/schema-routes.ts';
import { normalizeHost, wildcardSuffix } from './host.ts';
import { NO_FIT, PrefixTree } from './router-tree.ts';

/**
 * A route matched: forward with it. `index` is its position in the listener's `routes`.
 *
 * @example
 * const m = router.match('a.com', '/v1', 'GET');
 * if (m.ok) metrics.route = m.route.name;
 */
export interface RouteFound {
  readonly ok: true;
  readonly route: RouteConfig;
  readonly index: number;
}

/**
 * No route: 404 `no_route`, or 405 `method_not_allowed` with `allow` (the `Allow` header value).
 *
 * @example
 * if (!m.ok) reply(m.status, { error: m.code }, m.allow === undefined ? [] : [['allow', m.allow]]);
 */
export interface RouteMiss {
  readonly ok: false;
  readonly status: 404 | 405;
  readonly code: 'no_route' | 'method_not_allowed';
  /** For a 405: the methods of the routes that fit the path, `GET, POST` in canonical order. */
  readonly allow: string | undefined;
}

/**
 * What `Router.match` answers; `ok` tells which.
 *
 * @example
 * const m: RouteMatch = router.match(host, path, method);
 */
export type RouteMatch = RouteFound | RouteMiss;

/**
 * A compiled router: one per listener per config snapshot, shared by its connections.
 *
 * @example
 * const router: Router = compileRouter(listener.routes);
 * router.match(undefined, '/health', 'GET'); // HTTP/1.0 without Host: routes without host only
 */
export interface Router {
  /**
   * The route for a request. `host` is the raw `Host` header (port, case and a trailing dot do
   * not matter); `target` is the request-target as sent, query included: origin form
   * (`/v1?q`), or absolute form (`http://a.com/v1?q`, routed by its path).
   */
  match(host: string | undefined, target: string, method: string): RouteMatch;
}

const NO_ROUTE: RouteMiss = Object.freeze({ ok: false, status: 404, code: 'no_route', allow: undefined });
const METHOD_INDEX = new Map<string, number>(HTTP_METHODS.map((m, i) => [m, i]));
const METHOD_COUNT = HTTP_METHODS.length;
const SLASH = 0x2f;
const QUESTION = 0x3f;

function allowOf(mask: number): RouteMiss {
  const names = HTTP_METHODS.filter((_, i) => (mask & (1 << i)) !== 0);
  return Object.freeze({ ok: false, status: 405, code: 'method_not_allowed', allow: names.join(', ') });
}

class CompiledRouter implements Router {
  private readonly exact = new Map<string, PrefixTree<RouteFound>>();
  private readonly wildcard = new Map<string, PrefixTree<RouteFound>>();
  /** Lengths of the wildcard suffixes: a dot is only tried (a substring made) at those lengths. */
  private readonly suffixLengths = new Set<number>();
  private readonly anyHost = new PrefixTree<RouteFound>();
  /** 405 answers by method mask, built on first use (at most 2^9). */
  private readonly notAllowed = new Map<number, RouteMiss>();

  constructor(routes: readonly RouteConfig[]) {
    routes.forEach((route, index) => {
      const tree = this.treeFor(route.match.host);
      if (tree === undefined) return;
      const entry = tree.entry(route.match.pathPrefix, METHOD_COUNT);
      const found: RouteFound = Object.freeze({ ok: true, route, index });
      const methods = route.match.methods;
      if (methods === undefined) {
        entry.any ??= found; // earlier routes win ties (config order)
        return;
      }
      for (const m of methods) {
        const i = METHOD_INDEX.get(m.toUpperCase());
        if (i === undefined) continue;
        entry.byMethod[i] ??= found;
        entry.mask |= 1 << i;
      }
    });
  }

  private treeFor(host: string | undefined): PrefixTree<RouteFound> | undefined {
    if (host === undefined) return this.anyHost;
    const suffix = wildcardSuffix(host);
    const [map, key] = suffix !== undefined ? [this.wildcard, suffix] : [this.exact, normalizeHost(host)];
    if (key === undefined) return undefined; // a host with nothing left (e.g. ':80') never matches
    if (suffix !== undefined) this.suffixLengths.add(key.length);
    let tree = map.get(key);
    if (tree === undefined) map.set(key, (tree = new PrefixTree()));
    return tree;
  }

  match(rawHost: string | undefined, target: string, method: string): RouteMatch {
    // The connection passes the request-target as sent: an absolute-form one
    // (`http://host/v1?q`, what a client talking to a proxy sends) is routed by its path, as
    // upstreamTarget() sends it. Without this it fitted no prefix at all (404).
    const path = target.charCodeAt(0) === SLASH ? target : originPath(target);
    const q = path.indexOf('?');
    const end = q < 0 ? path.length : q;
    const m = METHOD_INDEX.get(method) ?? -1;
    const host = rawHost === undefined || (this.exact.size === 0 && this.wildcard.size === 0) ? undefined : normalizeHost(rawHost);
    if (host !== undefined) {
      const exact = this.exact.get(host);
      if (exact !== undefined) {
        const r = exact.lookup(path, end, m);
        if (r !== NO_FIT) return this.answer(r);
      }
      if (this.wildcard.size !== 0) {
        // Longest suffix first: the dots from the left; never the whole name (`*.a` is not `a`).
        for (let dot = host.indexOf('.'); dot >= 0; dot = host.indexOf('.', dot + 1)) {
          if (!this.suffixLengths.has(host.length - dot - 1)) continue;
          const tree = this.wildcard.get(host.slice(dot + 1));
          if (tree === undefined) continue;
          const r = tree.lookup(path, end, m);
          if (r !== NO_FIT) return this.answer(r);
        }
      }
    }
    const r = this.anyHost.lookup(path, end, m);
    return r === NO_FIT ? NO_ROUTE : this.answer(r);
  }

  private answer(r: RouteFound | number): RouteMatch {
    if (typeof r !== 'number') return r;
    let miss = this.notAllowed.get(r);
    if (miss === undefined) this.notAllowed.set(r, (miss = allowOf(r)));
    return miss;
  }
}

/**
 * The path (query kept) of a request-target that is not in origin form: `http://a.com/x?q`
 * gives `/x?q`, `http://a.com?q` gives `/?q`. Other forms (`*`, CONNECT's `host:port`) are
 * returned as they are: no prefix fits them.
 */
function originPath(target: string): string {
  const scheme = target.indexOf('://');
  if (scheme < 0) return target;
  let p = scheme + 3;
  while (p < target.length && target.charCodeAt(p) !== SLASH && target.charCodeAt(p) !== QUESTION) p++;
  if (p === target.length) return '/';
  return target.charCodeAt(p) === QUESTION ? `/${target.slice(p)}` : target.slice(p);
}

/**
 * Compiles a listener's routes (as `routesSchema` produces them) into a router.
 *
 * @example
 * const router = compileRouter(listener.routes);
 * const m = router.match('api.example.com:8443', '/v1/users?page=2', 'GET');
 * if (m.ok) forward(m.route); else answer(m.status, m.code, m.allow);
 */
export function compileRouter(routes: readonly RouteConfig[]): Router {
  return new CompiledRouter(routes);
}

/**
 * The upstream path for a route with `stripPrefix`: the request path without the matched
 * `pathPrefix`, always starting with `/`, query kept. `path` must fit `prefix` (it matched).
 *
 * @example
 * stripPrefix('/v1/x?q', '/v1'); // '/x?q'
 * stripPrefix('/v1', '/v1');     // '/'
 * stripPrefix('/v1?q', '/v1');   // '/?q'
 * stripPrefix('/v1/x', '/v1/');  // '/x'
 */
export function stripPrefix(path: string, prefix: string): string {
  // A prefix ending in '/' keeps that slash as the first character of what is left.
  const cut = prefix.charCodeAt(prefix.length - 1) === 0x2f ? prefix.length - 1 : prefix.length;
  if (cut === 0) return path;
  if (cut >= path.length) return '/';
  return path.charCodeAt(cut) === 0x3f ? `/${path.slice(cut)}` : path.slice(cut);
}

/**
 * True when the path of a request-target has a dot-segment (`.` or `..`, also percent-encoded
 * as `%2e`): the gateway routes the path as sent, and a backend that resolves `/open/../admin`
 * to `/admin` would serve a route the gateway never checked (its auth, its limits). Such
 * requests are refused (400) rather than normalized, as no legitimate client sends them.
 *
 * @example
 * hasDotSegment('/open/../admin'); // true
 * hasDotSegment('/v1.2/file.txt'); // false
 */
export function hasDotSegment(target: string): boolean {
  if (target.indexOf('.') < 0 && target.indexOf('%') < 0) return false;
  let end = target.indexOf('?');
  if (end < 0) end = target.length;
  const path = target.slice(0, end).replace(/%2e/gi, '.');
  return /(^|\/)\.{1,2}(\/|$)/.test(path);
}
