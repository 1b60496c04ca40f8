import { describe, expect, test } from 'vitest';
import { routesSchema } from '../../src/config/schema-routes.ts';
import { normalizeHost, wildcardSuffix } from '../../src/http/host.ts';
import { compileRouter, stripPrefix } from '../../src/http/router.ts';

/** Routes as the config produces them (defaults and `route-N` names filled in). */
const routes = routesSchema.parse([
  { name: 'api-exact', match: { host: 'API.example.com', pathPrefix: '/v1' }, upstream: 'u' },
  { name: 'api-exact-root', match: { host: 'api.example.com' }, upstream: 'u' },
  { name: 'shop-only-v2', match: { host: 'shop.example.com', pathPrefix: '/v2' }, upstream: 'u' },
  { name: 'wild', match: { host: '*.example.com', pathPrefix: '/' }, upstream: 'u' },
  { name: 'wild-deep', match: { host: '*.eu.example.com', pathPrefix: '/eu' }, upstream: 'u' },
  { name: 'v1', match: { pathPrefix: '/v1' }, upstream: 'u' },
  { name: 'v1-slash', match: { pathPrefix: '/v1/' }, upstream: 'u' },
  { name: 'v1-users', match: { pathPrefix: '/v1/users' }, upstream: 'u' },
  { name: 'items-get', match: { pathPrefix: '/items', methods: ['get', 'HEAD'] }, upstream: 'u' },
  { name: 'items-any', match: { pathPrefix: '/items' }, upstream: 'u' },
  { name: 'items-post', match: { pathPrefix: '/items', methods: ['POST'] }, upstream: 'u' },
  { name: 'admin-get', match: { pathPrefix: '/admin', methods: ['GET'] }, upstream: 'u' },
  { name: 'admin-delete', match: { pathPrefix: '/admin', methods: ['DELETE', 'GET'] }, upstream: 'u' },
  { name: 'admin-x-put', match: { pathPrefix: '/admin/x', methods: ['PUT'] }, upstream: 'u' },
  { name: 'dup-first', match: { pathPrefix: '/dup' }, upstream: 'u' },
  { name: 'dup-second', match: { pathPrefix: '/dup' }, upstream: 'u' },
  { name: 'v6', match: { host: '[::1]', pathPrefix: '/six' }, upstream: 'u' },
]);
const router = compileRouter(routes);

// [why, host, path, method, expected route name | 404 | '405 <Allow>']
const cases: [string, string | undefined, string, string, string | number][] = [
  ['exact host, longest prefix', 'api.example.com', '/v1/x', 'GET', 'api-exact'],
  ['exact host is case-insensitive, port ignored', 'API.Example.COM:8443', '/v1', 'GET', 'api-exact'],
  ['exact host, trailing dot', 'api.example.com.', '/v1?q=1', 'GET', 'api-exact'],
  ['exact host, shorter prefix of the same tier', 'api.example.com', '/v10', 'GET', 'api-exact-root'],
  ['exact tier before wildcard tier', 'api.example.com', '/anything', 'GET', 'api-exact-root'],
  ['exact tier without a fitting path falls to wildcard', 'shop.example.com', '/v1', 'GET', 'wild'],
  ['exact tier fits the path', 'shop.example.com', '/v2/cart', 'GET', 'shop-only-v2'],
  ['wildcard matches one label', 'www.example.com', '/', 'GET', 'wild'],
  ['wildcard matches several labels', 'a.b.example.com', '/x', 'GET', 'wild'],
  ['wildcard does not match the bare suffix', 'example.com', '/v1', 'GET', 'v1'],
  ['longest wildcard suffix first', 'paris.eu.example.com', '/eu/x', 'GET', 'wild-deep'],
  ['longer wildcard without fitting path falls to shorter', 'paris.eu.example.com', '/us', 'GET', 'wild'],
  ['a name only ending in the suffix text is not under it', 'badexample.com', '/v1', 'GET', 'v1'],
  ['no Host: only routes without host', undefined, '/v1', 'GET', 'v1'],
  ['unknown host: routes without host', 'other.org', '/v1/users/7', 'GET', 'v1-users'],
  ['segment boundary: /v1 does not match /v10', 'other.org', '/v10', 'GET', 404],
  ['prefix equals path', 'other.org', '/v1', 'GET', 'v1'],
  ['query after prefix', 'other.org', '/v1?x=/users', 'GET', 'v1'],
  ['trailing-slash prefix beats its bare form', 'other.org', '/v1/x', 'GET', 'v1-slash'],
  ['trailing-slash prefix needs the slash', 'other.org', '/v1', 'GET', 'v1'],
  ['/v1/users does not match /v1/usersx', 'other.org', '/v1/usersx', 'GET', 'v1-slash'],
  ['route listing the method beats one without methods', 'other.org', '/items', 'GET', 'items-get'],
  ['route without methods takes the others', 'other.org', '/items/1', 'PATCH', 'items-any'],
  ['listing beats config order', 'other.org', '/items', 'POST', 'items-post'],
  ['method is case-sensitive (get is not GET)', 'other.org', '/items', 'get', 'items-any'],
  ['first listing route wins', 'other.org', '/admin', 'GET', 'admin-get'],
  ['second route for its own method', 'other.org', '/admin', 'DELETE', 'admin-delete'],
  ['405 lists the methods of the fitting routes', 'other.org', '/admin', 'POST', '405 GET, DELETE'],
  ['longer prefix excluding the method falls back to a shorter one', 'other.org', '/admin/x', 'GET', 'admin-get'],
  ['405 unions all fitting prefixes', 'other.org', '/admin/x/y', 'POST', '405 GET, PUT, DELETE'],
  ['405 for an unknown method', 'other.org', '/admin', 'BREW', '405 GET, DELETE'],
  ['duplicate routes: config order', 'other.org', '/dup', 'GET', 'dup-first'],
  ['no route at all', 'other.org', '/nothing', 'GET', 404],
  ['not origin form', 'other.org', '*', 'OPTIONS', 404],
  ['IPv6 literal with port', '[::1]:8080', '/six', 'GET', 'v6'],
  ['IPv6 literal, other path: next tier', '[::1]', '/v1', 'GET', 'v1'],
];

describe('router precedence', () => {
  test.each(cases)('%s: %s %s %s', (_why, host, path, method, expected) => {
    const m = router.match(host, path, method);
    if (typeof expected === 'number') {
      expect(m).toMatchObject({ ok: false, status: 404, code: 'no_route' });
    } else if (expected.startsWith('405 ')) {
      expect(m).toMatchObject({ ok: false, status: 405, code: 'method_not_allowed', allow: expected.slice(4) });
    } else {
      expect(m.ok && m.route.name).toBe(expected);
      expect(m.ok && routes[m.index]).toBe(m.ok && m.route);
    }
  });

  test('a tier whose fitting routes all exclude the method answers 405, not the next tier', () => {
    const r = compileRouter(routesSchema.parse([
      { name: 'h', match: { host: 'a.com', pathPrefix: '/', methods: ['GET'] }, upstream: 'u' },
      { name: 'any', match: { pathPrefix: '/' }, upstream: 'u' },
    ]));
    expect(r.match('a.com', '/x', 'POST')).toMatchObject({ status: 405, allow: 'GET' });
    expect(r.match('b.com', '/x', 'POST')).toMatchObject({ ok: true, route: { name: 'any' } });
  });

  test('answers are built at compile time (the same object each request)', () => {
    expect(router.match('x.org', '/v1', 'GET')).toBe(router.match('y.org', '/v1?a', 'GET'));
    expect(router.match('x.org', '/none', 'GET')).toBe(router.match(undefined, '/nope', 'PUT'));
    expect(router.match('x.org', '/admin', 'POST')).toBe(router.match('x.org', '/admin', 'PATCH'));
  });
});

describe('normalizeHost', () => {
  test.each([
    ['example.com', 'example.com'],
    ['Example.COM:80', 'example.com'],
    ['example.com.', 'example.com'],
    ['example.com.:443', 'example.com'],
    ['[::1]:8080', '::1'],
    ['[2001:DB8::1]', '2001:db8::1'],
    ['2001:db8::1', '2001:db8::1'],
    ['127.0.0.1:9000', '127.0.0.1'],
    ['.', '.'],
    ['', undefined],
    [':80', undefined],
    ['[::1', undefined],
    [undefined, undefined],
  ])('%s -> %s', (raw, expected) => {
    expect(normalizeHost(raw)).toBe(expected);
  });

  test.each([
    ['*.example.com', 'example.com'],
    ['*.Example.com.', 'example.com'],
    ['example.com', undefined],
    ['*example.com', undefined],
    ['*.', undefined],
  ])('wildcardSuffix(%s) -> %s', (host, expected) => {
    expect(wildcardSuffix(host)).toBe(expected);
  });
});

describe('stripPrefix', () => {
  test.each([
    ['/v1/x?q', '/v1', '/x?q'],
    ['/v1', '/v1', '/'],
    ['/v1?q=1', '/v1', '/?q=1'],
    ['/v1/x', '/v1/', '/x'],
    ['/v1/', '/v1/', '/'],
    ['/v1/a/b', '/v1/a', '/b'],
    ['/anything?x', '/', '/anything?x'],
  ])('%s without %s is %s', (path, prefix, expected) => {
    expect(stripPrefix(path, prefix)).toBe(expected);
  });
});
