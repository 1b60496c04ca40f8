import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { HTTP_METHODS } from '../../src/config/schema-routes.ts';
import type { RouteConfig } from '../../src/config/types.ts';
import { compileRouter, stripPrefix, type RouteMatch } from '../../src/http/router.ts';

/**
 * The contract read literally, as a linear scan: host tiers (exact, then each `*.suffix` from the
 * longest suffix, then no host), the first tier with a route fitting the path decides; among its
 * fitting routes that take the method: longest prefix, then listing the method, then config
 * order; none takes it: 405 with the union of their methods.
 */
function reference(routes: RouteConfig[], rawHost: string | undefined, path: string, method: string) {
  let host: string | undefined;
  if (rawHost !== undefined) {
    host = rawHost.startsWith('[') ? rawHost.slice(1, rawHost.indexOf(']')) : rawHost.split(':')[0]!;
    host = host.toLowerCase().replace(/\.$/, '');
  }
  const bare = path.split('?')[0]!;
  const fits = (p: string) => bare === p || (bare.startsWith(p) && (p.endsWith('/') || bare[p.length] === '/'));
  const tiers: RouteConfig[][] = [];
  if (host !== undefined) {
    tiers.push(routes.filter((r) => r.match.host !== undefined && !r.match.host.startsWith('*.') && r.match.host === host));
    const suffixes = [...new Set(routes.map((r) => r.match.host).filter((h) => h?.startsWith('*.')))] as string[];
    suffixes.sort((a, b) => b.length - a.length);
    for (const s of suffixes) if (host.endsWith(s.slice(1))) tiers.push(routes.filter((r) => r.match.host === s));
  }
  tiers.push(routes.filter((r) => r.match.host === undefined));
  for (const tier of tiers) {
    const fitting = tier.filter((r) => fits(r.match.pathPrefix));
    if (fitting.length === 0) continue;
    const taking = fitting.filter((r) => r.match.methods === undefined || r.match.methods.includes(method));
    if (taking.length === 0) {
      const allow = HTTP_METHODS.filter((m) => fitting.some((r) => r.match.methods!.includes(m)));
      return { status: 405, allow: allow.join(', ') };
    }
    const score = (r: RouteConfig) => r.match.pathPrefix.length * 2 + (r.match.methods ? 1 : 0);
    const best = taking.reduce((a, b) => (score(b) > score(a) ? b : a)); // ties: the earlier route
    return { status: 200, index: routes.indexOf(best) };
  }
  return { status: 404 };
}

const observed = (m: RouteMatch) => (m.ok ? { status: 200, index: m.index } : m.status === 404 ? { status: 404 } : { status: 405, allow: m.allow });

const NAMES = ['a.com', 'b.a.com', 'x.b.a.com', 'c.com', 'a.co'];
const SEGMENTS = ['a', 'b', 'ab', 'v1', 'v10', ''];
const segs = fc.array(fc.constantFrom(...SEGMENTS), { minLength: 0, maxLength: 3 });
const prefix = fc.tuple(segs, fc.boolean()).map(([s, slash]) => `/${s.join('/')}${slash && s.length > 0 ? '/' : ''}`);
const routeHost = fc.option(fc.oneof(fc.constantFrom(...NAMES), fc.constantFrom(...NAMES).map((n) => `*.${n}`)), { nil: undefined });
const methods = fc.option(fc.subarray(['GET', 'POST', 'PUT', 'DELETE'], { minLength: 1 }), { nil: undefined });
const route = fc.record({ host: routeHost, pathPrefix: prefix, methods });
const routeSet = fc.array(route, { minLength: 1, maxLength: 12 }).map((rs): RouteConfig[] =>
  rs.map((m, i) => ({ name: `r${i}`, match: m, upstream: 'u', stripPrefix: false, timeout: 30_000, retries: 0, idleTimeout: 60_000, retryOn: ['connect-failure', 'reset'], websocket: false })),
);
const reqHost = fc.option(
  fc.tuple(fc.constantFrom(...NAMES, 'z.x.b.a.com', 'other.org'), fc.boolean(), fc.constantFrom('', ':80', '.', '.:8443')).map(([n, upper, tail]) => (upper ? n.toUpperCase() : n) + tail),
  { nil: undefined },
);
const reqPath = fc.tuple(segs, fc.boolean(), fc.constantFrom('', '?q', '?x=/a/b', '?')).map(([s, slash, q]) => `/${s.join('/')}${slash ? '/' : ''}${q}`);
const request = fc.tuple(reqHost, reqPath, fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'BREW'));

describe('router against the reference scan', () => {
  test('agrees on random route sets and requests', () => {
    fc.assert(
      fc.property(routeSet, fc.array(request, { minLength: 1, maxLength: 40 }), (routes, requests) => {
        const router = compileRouter(routes);
        for (const [host, path, method] of requests) {
          expect(observed(router.match(host, path, method)), `${host} ${method} ${path}`).toEqual(reference(routes, host, path, method));
        }
      }),
      { numRuns: 500 },
    );
  });

  test('stripPrefix of a matched route keeps the rest of the path and the query', () => {
    fc.assert(
      fc.property(routeSet, request, (routes, [host, path, method]) => {
        const m = compileRouter(routes).match(host, path, method);
        if (!m.ok) return;
        const p = m.route.match.pathPrefix.replace(/\/$/, '');
        const rest = path.slice(p.length); // '', '/...' or '?...': the segment boundary held
        expect(stripPrefix(path, m.route.match.pathPrefix)).toBe(rest.startsWith('/') ? rest : `/${rest}`);
      }),
      { numRuns: 500 },
    );
  });
});
