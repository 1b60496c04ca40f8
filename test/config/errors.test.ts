import { describe, expect, test } from 'vitest';
import { ConfigError, formatConfigIssue } from '../../src/errors.ts';
import { parseConfig } from '../../src/config/load.ts';

/** What `gatehouse check gh.yaml` would print for these lines. */
function check(...lines: string[]): string[] {
  try {
    parseConfig(lines.join('\n'), 'gh.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map(formatConfigIssue);
    throw err;
  }
  return [];
}

const UP = 'upstreams: [ { name: app, backends: ["127.0.0.1:9001"] } ]';
const SECRET = 'errors-test-secret-0123456789abcdef';
const HUB = (jwt: string) => [UP, 'listeners:', '  - name: hub', '    protocol: hub', '    listen: 8090', `    auth: { jwt: ${jwt} }`, '    nodes: [ { id: n1, url: "ws://127.0.0.1:7001/" } ]'];

describe('schema errors point at the offending value', () => {
  test('unknown key, with a suggestion, at the key', () => {
    expect(check('runtime:', '  workers: 2', '  shutdownTimout: 5s')).toEqual([
      'gh.yaml:3:3 runtime.shutdownTimout: unknown key (did you mean "shutdownTimeout"?)',
    ]);
  });

  test('unknown key with no near match lists the known ones', () => {
    expect(check('log: { level: info, colour: red }')).toEqual([
      'gh.yaml:1:21 log.colour: unknown key (expected one of level)',
    ]);
    expect(check('listners: []')).toEqual(['gh.yaml:1:1 listners: unknown key (did you mean "listeners"?)']);
  });

  test('a key that belongs to another protocol is unknown', () => {
    expect(check(UP, 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app, routes: [] }')).toEqual([
      'gh.yaml:3:58 listeners.0.routes: unknown key (expected one of protocol, name, listen, maxConnections, maxConnectionsPerIp, rateLimit, idleTimeout, tls, proxyProtocol, upstream)',
    ]);
  });

  test('tls: certificate files are read, a missing one named at its key path; proxyProtocol checked; sendProxyProtocol only from tcp listeners', () => {
    const errs = check(
      UP,
      'listeners:',
      '  - name: in',
      '    protocol: tcp',
      '    listen: 1',
      '    upstream: app',
      '    tls: { certificates: [ { cert: /nonexistent/c.pem, key: /nonexistent/k.pem, serverNames: ["*.Example.com."] } ] }',
    );
    expect(errs).toEqual([expect.stringMatching(/^gh\.yaml:7:36 listeners\.0\.tls\.certificates\.0\.cert: .*\/nonexistent\/c\.pem/)]);
    expect(check(UP, 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app, tls: { certificates: [] } }')).toEqual([
      expect.stringMatching(/listeners\.0\.tls\.certificates: at least one certificate/),
    ]);
    expect(check(UP, 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app, tls: { certificates: [ { cert: c, key: k, serverNames: ["a.*.com"] } ] } }')[0]).toMatch(
      /serverNames\.0: expected a DNS name or \*\.suffix/,
    );
    expect(check(UP, 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app, proxyProtocol: { trustedProxies: [10.0.0.0/8] } }')).toEqual([]);
    expect(check(UP, 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app, proxyProtocol: { accept: v3, trustedProxies: [] } }')).toEqual([
      expect.stringMatching(/listeners\.0\.proxyProtocol\.accept: /),
      expect.stringMatching(/listeners\.0\.proxyProtocol\.trustedProxies: at least one CIDR/),
    ]);
    expect(check('upstreams:', '  - { name: app, backends: ["127.0.0.1:1"], tls: { verify: false }, sendProxyProtocol: v2 }', 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app }')).toEqual([]);
    expect(check('upstreams:', '  - { name: app, backends: ["127.0.0.1:1"], sendProxyProtocol: v1 }', 'listeners:', '  - { name: in, protocol: http, listen: 1, routes: [ { name: r, split: [ { upstream: app, weight: 1 } ] } ] }')).toEqual([
      expect.stringMatching(/upstreams\.0\.sendProxyProtocol: upstream "app" is used by an http route: its pooled connections serve many clients/),
    ]);
    expect(check('upstreams:', '  - { name: app, backends: ["127.0.0.1:1"], tls: { ca: /nonexistent/ca.pem } }', 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app }')).toEqual([
      expect.stringMatching(/upstreams\.0\.tls\.ca: .*\/nonexistent\/ca\.pem/),
    ]);
    expect(check('upstreams:', '  - { name: app, backends: ["127.0.0.1:1"], tls: { cert: c.pem } }', 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app }')[0]).toMatch(/upstreams\.0\.tls: cert and key go together/);
  });

  test('a hub listener without auth needs tls.clientAuth required', () => {
    const hub = (extra: string) => check('listeners:', `  - { name: h, protocol: hub, listen: 1, nodes: [ { id: n1, url: "ws://127.0.0.1:1/" } ]${extra} }`);
    expect(hub('')).toEqual([expect.stringMatching(/^gh\.yaml:\d+:\d+ listeners\.0\.auth: required: a hub listener needs auth\.jwt .* or tls\.clientAuth with required: true/)]);
    expect(hub(', tls: { certificates: [ { cert: /nonexistent/c, key: /nonexistent/k } ], clientAuth: { ca: /nonexistent/ca, required: false } }')[0]).toMatch(/listeners\.0\.auth: required/);
  });

  test('bad duration', () => {
    expect(check('runtime:', '  shutdownTimeout: 5 sec')).toEqual([
      'gh.yaml:2:20 runtime.shutdownTimeout: invalid duration "5 sec": use a number with ms, s, m, h or d (500ms, 5s, 1m30s), or a plain number of milliseconds',
    ]);
    expect(check('runtime: { shutdownTimeout: 0 }')).toEqual(['gh.yaml:1:29 runtime.shutdownTimeout: must be greater than 0']);
    expect(check('runtime: { shutdownTimeout: [5s] }')).toEqual([
      'gh.yaml:1:29 runtime.shutdownTimeout: expected a duration like 500ms or 5s, got a list',
    ]);
  });

  test('bad size', () => {
    expect(check(UP, 'listeners:', '  - name: hub', '    protocol: hub', '    listen: 8090', `    auth: { jwt: { secret: ${SECRET} } }`,
      '    nodes: [ { id: n1, url: "ws://127.0.0.1:7001/" } ]', '    maxMessageSize: 64K')).toEqual([
      'gh.yaml:8:21 listeners.0.maxMessageSize: invalid size "64K": use a number with B, KiB, MiB, GiB (1024-based) or KB, MB, GB (1000-based), or a plain number of bytes',
    ]);
  });

  test('bad listen', () => {
    expect(check('admin:', '  listen: localhost')).toEqual([
      'gh.yaml:2:11 admin.listen: invalid listen address "localhost": use host:port, [ipv6]:port or a bare port',
    ]);
    expect(check('admin: { listen: "::1:9901" }')).toEqual([
      'gh.yaml:1:18 admin.listen: invalid listen address "::1:9901": put IPv6 hosts in brackets, like [::1]:8080',
    ]);
    expect(check('admin: { listen: 127.0.0.1:99999 }')).toEqual([
      'gh.yaml:1:18 admin.listen: port 99999 in "127.0.0.1:99999" is out of range (0-65535)',
    ]);
  });

  test('wrong type, bad enum value, out of range', () => {
    expect(check('runtime:', '  workers: two', '  debug: yes', 'log:', '  level: loud', UP.replace('app,', 'app, connectRetries: -1,'))).toEqual([
      'gh.yaml:2:12 runtime.workers: expected a number, got a string ("two")',
      'gh.yaml:3:10 runtime.debug: expected true or false, got a string ("yes")',
      'gh.yaml:5:10 log.level: expected one of fatal, error, warn, info, debug, trace, silent, got a string ("loud")',
      'gh.yaml:6:43 upstreams.0.connectRetries: must be >= 0, got -1',
    ]);
    expect(check('runtime: { workers: 1.5 }')).toEqual(['gh.yaml:1:21 runtime.workers: expected an integer, got 1.5']);
  });

  test('a missing key points at the map it is missing from', () => {
    expect(check(UP, 'listeners:', '  - name: in', '    protocol: tcp', '    listen: 15000')).toEqual([
      'gh.yaml:3:5 listeners.0.upstream: required: a tcp listener needs an upstream',
    ]);
    expect(check('actors:', '  - { name: a }')).toEqual(['gh.yaml:2:5 actors.0.module: required']);
    expect(check(UP, 'listeners: [ { name: x, protocol: tcp, upstream: app } ]')).toEqual(['gh.yaml:2:14 listeners.0.listen: required']);
  });

  test('unknown or missing protocol', () => {
    expect(check('listeners:', '  - { name: u, protocol: udp, listen: 1 }', '  - { name: v, listen: 2 }')).toEqual([
      'gh.yaml:2:26 listeners.0.protocol: expected one of tcp, http, hub, got a string ("udp")',
      'gh.yaml:3:5 listeners.1.protocol: required: one of tcp, http, hub',
    ]);
  });

  test('a section of the wrong shape', () => {
    expect(check('upstreams: { name: app }')).toEqual(['gh.yaml:1:12 upstreams: expected a list, got a mapping']);
    expect(check('- a')).toEqual(['gh.yaml:1:1 (root): expected a mapping of config sections']);
  });

  test('names are checked', () => {
    expect(check('upstreams: [ { name: "my app", backends: ["h:1"] } ]')).toEqual([
      'gh.yaml:1:22 upstreams.0.name: invalid name "my app": use 1-64 letters, digits, \'-\', \'_\' or \'.\', starting with a letter or digit',
    ]);
  });

  test('URLs are checked', () => {
    expect(check('cluster: { redis: "http://x:6379" }')).toEqual([
      'gh.yaml:1:19 cluster.redis: expected a redis://, rediss:// or redis+sentinel:// URL, got a string ("http://x:6379")',
    ]);
  });
});

describe('cross-field rules', () => {
  test('reference to a missing upstream, from a tcp listener, a route and a split', () => {
    expect(check(UP, 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: ap }',
      '  - name: web', '    protocol: http', '    listen: 2', '    routes:', '      - upstream: nope',
      '      - split: [ { upstream: app, weight: 9 }, { upstream: canary } ]')).toEqual([
      'gh.yaml:3:53 listeners.0.upstream: unknown upstream "ap" (known: app)',
      'gh.yaml:8:19 listeners.1.routes.0.upstream: unknown upstream "nope" (known: app)',
      'gh.yaml:9:60 listeners.1.routes.1.split.1.upstream: unknown upstream "canary" (known: app)',
    ]);
    expect(check('listeners: [ { name: in, protocol: tcp, listen: 1, upstream: app } ]')).toEqual([
      'gh.yaml:1:62 listeners.0.upstream: unknown upstream "app" (none defined)',
    ]);
  });

  test('duplicate names point at the second one', () => {
    expect(check('upstreams:', '  - { name: app, backends: ["h:1"] }', '  - { name: app, backends: ["h:2"] }',
      'actors: [ { name: a, module: ./a.ts }, { name: a, module: ./b.ts } ]')).toEqual([
      'gh.yaml:3:13 upstreams.1.name: duplicate upstream name "app" (first at upstreams.0)',
      'gh.yaml:4:48 actors.1.name: duplicate actor name "a" (first at actors.0)',
    ]);
    expect(check(UP, 'listeners:', '  - { name: in, protocol: tcp, listen: 1, upstream: app }',
      '  - { name: in, protocol: tcp, listen: 2, upstream: app }')).toEqual([
      'gh.yaml:4:13 listeners.1.name: duplicate listener name "in" (first at listeners.0)',
    ]);
  });

  test('an upstream needs backends or discovery', () => {
    expect(check('upstreams: [ { name: app } ]')).toEqual(['gh.yaml:1:14 upstreams.0.backends: required: an upstream needs backends or discovery']);
    expect(check('upstreams: [ { name: app, discovery: { service: app } } ]')).toEqual([]);
  });

  test('a hub listener needs auth and nodes or discovery', () => {
    expect(check('listeners:', '  - name: hub', '    protocol: hub', '    listen: 8090')).toEqual([
      "gh.yaml:2:5 listeners.0.auth: required: a hub listener needs auth.jwt (the token's sub is the user id), or tls.clientAuth with required: true (the client certificate's CN is the user id)",
      'gh.yaml:2:5 listeners.0.nodes: required: a hub listener needs nodes or discovery',
    ]);
  });

  test('a route needs exactly one of upstream and split', () => {
    expect(check(UP, 'listeners:', '  - name: web', '    protocol: http', '    listen: 2', '    routes:',
      '      - { name: a }', '      - { name: b, upstream: app, split: [ { upstream: app } ] }')).toEqual([
      'gh.yaml:7:9 listeners.0.routes.0.upstream: required: a route needs upstream or split',
      'gh.yaml:8:42 listeners.0.routes.1.split: use upstream or split, not both',
    ]);
  });

  test('JWT keys exclude each other and fix the algorithms', () => {
    expect(check(UP, 'listeners:', '  - name: web', '    protocol: http', '    listen: 2', '    routes:', '      - upstream: app',
      '        auth: { jwt: { secret: s, jwksUrl: "https://idp/jwks", algorithms: [HS256] } }',
      '      - upstream: app', '        auth: { jwt: { publicKey: PEM, algorithms: [HS256] } }',
      '        rateLimit: { perSecond: 1, key: "jwt:sub" }',
      '      - { upstream: app, rateLimit: { perSecond: 1, key: "jwt:sub" } }')).toEqual([
      'gh.yaml:8:44 listeners.0.routes.0.auth.jwt.jwksUrl: use only one of secret, publicKey and jwksUrl (secret is set)',
      'gh.yaml:10:53 listeners.0.routes.1.auth.jwt.algorithms.0: HS256 needs a secret, not publicKey',
      'gh.yaml:12:58 listeners.0.routes.2.rateLimit.key: jwt:sub needs auth.jwt on this route',
    ]);
  });

  test('two listeners on one address', () => {
    expect(check(UP, 'admin: { listen: 127.0.0.1:9000 }', 'listeners:', '  - { name: a, protocol: tcp, listen: 9000, upstream: app }',
      '  - { name: b, protocol: tcp, listen: 0, upstream: app }', '  - { name: c, protocol: tcp, listen: 0, upstream: app }')).toEqual([
      'gh.yaml:4:39 listeners.0.listen: address 9000 is already used by admin.listen',
    ]);
  });

  test('health check timeout longer than its interval', () => {
    expect(check('upstreams: [ { name: app, backends: ["h:1"], healthCheck: { interval: 1s, timeout: 2s } } ]')).toEqual([
      'gh.yaml:1:84 upstreams.0.healthCheck.timeout: must not be longer than the interval (1000 ms)',
    ]);
  });
});

describe('auth.jwt safety', () => {
  test('an HMAC secret shorter than its hash: 32 bytes for HS256, 48 for HS384, 64 for HS512', () => {
    expect(check(...HUB(`{ secret: ${'x'.repeat(31)} }`))).toEqual([
      'gh.yaml:6:28 listeners.0.auth.jwt.secret: too short for HS256: 31 bytes, needs at least 32 (generate one with: openssl rand -base64 32)',
    ]);
    expect(check(...HUB(`{ secret: ${'x'.repeat(32)} }`))).toEqual([]);
    expect(check(...HUB(`{ secret: ${'x'.repeat(47)}, algorithms: [HS256, HS384] }`))).toEqual([
      'gh.yaml:6:28 listeners.0.auth.jwt.secret: too short for HS384: 47 bytes, needs at least 48 (generate one with: openssl rand -base64 48)',
    ]);
    expect(check(...HUB(`{ secret: ${'x'.repeat(63)}, algorithms: [HS512] }`))).toEqual([
      'gh.yaml:6:28 listeners.0.auth.jwt.secret: too short for HS512: 63 bytes, needs at least 64 (generate one with: openssl rand -base64 64)',
    ]);
  });

  test('jwksUrl: https, or http only to a loopback host', () => {
    expect(check(...HUB('{ jwksUrl: "http://example.com/jwks", algorithms: [RS256] }'))).toEqual([
      'gh.yaml:6:29 listeners.0.auth.jwt.jwksUrl: plain http: is only allowed to a loopback host (127.0.0.1, ::1, localhost): use https://, or anyone on the path could swap the keys',
    ]);
    expect(check(...HUB('{ jwksUrl: "ftp://example.com/jwks", algorithms: [RS256] }'))).toEqual([
      'gh.yaml:6:29 listeners.0.auth.jwt.jwksUrl: expected an https:// URL, got "ftp://example.com/jwks"',
    ]);
    expect(check(...HUB('{ jwksUrl: "http://127.0.0.1:8080/jwks", algorithms: [RS256] }'))).toEqual([]);
    expect(check(...HUB('{ jwksUrl: "https://idp.example.com/jwks", algorithms: [RS256] }'))).toEqual([]);
  });

  test('algorithms are required with publicKey and jwksUrl; HS* only with a secret', () => {
    expect(check(...HUB('{ jwksUrl: "https://idp.example.com/jwks" }'))).toEqual([
      'gh.yaml:6:18 listeners.0.auth.jwt.algorithms: required with jwksUrl: list the algorithms your issuer signs with, like [RS256]',
    ]);
    expect(check(...HUB('{ publicKey: PEM, algorithms: [HS256] }'))).toEqual([
      'gh.yaml:6:49 listeners.0.auth.jwt.algorithms.0: HS256 needs a secret, not publicKey',
    ]);
  });

  test('clockSkew, requireExp and forwardClaims; forwardClaims is for http routes only', () => {
    expect(check(...HUB(`{ secret: ${SECRET}, clockSkew: soon, requireExp: no }`))).toEqual([
      'gh.yaml:6:76 listeners.0.auth.jwt.clockSkew: invalid duration "soon": use a number with ms, s, m, h or d (500ms, 5s, 1m30s), or a plain number of milliseconds',
      'gh.yaml:6:94 listeners.0.auth.jwt.requireExp: expected true or false, got a string ("no")',
    ]);
    expect(check(...HUB(`{ secret: ${SECRET}, forwardClaims: { sub: x-user-id } }`))).toEqual([
      'gh.yaml:6:80 listeners.0.auth.jwt.forwardClaims: applies to http routes only: a hub client\'s user id is its sub',
    ]);
    expect(check(UP, 'listeners:', '  - name: web', '    protocol: http', '    listen: 2', '    routes:', '      - upstream: app',
      `        auth: { jwt: { secret: ${SECRET}, forwardClaims: { sub: X-User-Id, tenant: Content-Length, role: "bad header" } } }`)).toEqual([
      'gh.yaml:8:110 listeners.0.routes.0.auth.jwt.forwardClaims.tenant: "Content-Length" cannot be set from a claim (it frames or routes the request)',
      'gh.yaml:8:132 listeners.0.routes.0.auth.jwt.forwardClaims.role: expected a header name, got a string ("bad header")',
    ]);
  });
});

describe('route headers and CORS', () => {
  const ROUTE = [UP, 'listeners:', '  - name: web', '    protocol: http', '    listen: 2', '    routes:', '      - upstream: app'];

  test('CORS credentials cannot go with origin "*"', () => {
    expect(check(...ROUTE, '        cors: { origins: ["*"], credentials: true }')).toEqual([
      'gh.yaml:8:46 listeners.0.routes.0.cors.credentials: credentials cannot be used with origin "*" (browsers reject it): list the origins',
    ]);
    expect(check(...ROUTE, '        cors: { origins: ["*"] }')).toEqual([]);
    expect(check(...ROUTE, '        cors: { origins: ["https://app.example"], credentials: true }')).toEqual([]);
  });

  test('header rules: names are tokens, values without CR, LF or NUL, no framing fields, errors at the key', () => {
    expect(check(...ROUTE, '        headers:',
      '          request: { set: { "X Bad": v, X-Ok: "a\\r\\nb", Content-Length: "1", x-ok: c }, remove: [Host, "a:b"] }',
      '          response: { set: { Server: "n\\0" }, remove: [Transfer-Encoding] }')).toEqual([
      'gh.yaml:9:38 listeners.0.routes.0.headers.request.set.X Bad: expected a header name, got a string ("X Bad")',
      'gh.yaml:9:47 listeners.0.routes.0.headers.request.set.X-Ok: a header value cannot contain CR, LF, NUL, another control character or a character above U+00FF',
      'gh.yaml:9:73 listeners.0.routes.0.headers.request.set.Content-Length: "Content-Length" cannot be set (the gateway frames the message itself)',
      'gh.yaml:9:84 listeners.0.routes.0.headers.request.set.x-ok: "x-ok" is set twice (header names are case-insensitive)',
      'gh.yaml:9:98 listeners.0.routes.0.headers.request.remove.0: "Host" cannot be removed (an HTTP/1.1 request needs it; set it instead)',
      'gh.yaml:9:104 listeners.0.routes.0.headers.request.remove.1: expected a header name, got a string ("a:b")',
      'gh.yaml:10:38 listeners.0.routes.0.headers.response.set.Server: a header value cannot contain CR, LF, NUL, another control character or a character above U+00FF',
      'gh.yaml:10:56 listeners.0.routes.0.headers.response.remove.0: "Transfer-Encoding" cannot be removed (the gateway frames the message itself)',
    ]);
    expect(check(...ROUTE, '        headers: { request: { set: { X-Env: prod, Host: internal }, remove: [Cookie] }, response: { remove: [server] } }')).toEqual([]);
  });
});

describe('admin safety', () => {
  test('admin.listen off loopback needs admin.token', () => {
    expect(check('admin: { listen: "0.0.0.0:9901" }')).toEqual([
      'gh.yaml:1:18 admin.listen: 0.0.0.0:9901 is not a loopback address: set admin.token too (anyone who can reach the admin API could drain or reload the daemon)',
    ]);
    expect(check('admin:', '  listen: 9901')).toEqual([
      'gh.yaml:2:11 admin.listen: 9901 is not a loopback address: set admin.token too (anyone who can reach the admin API could drain or reload the daemon)',
    ]);
    expect(check('admin: { listen: "[::]:9901" }')).toHaveLength(1);
    expect(check('admin: { listen: "10.1.2.3:9901" }')).toHaveLength(1);
    expect(check('admin: { listen: "gw.internal:9901" }')).toHaveLength(1);
    expect(check('admin: { listen: "0.0.0.0:9901", token: t0ken }')).toEqual([]);
    for (const host of ['127.0.0.1', '127.0.0.2', '[::1]', 'localhost']) expect(check(`admin: { listen: "${host}:9901" }`), host).toEqual([]);
    expect(check('log: { level: info }')).toEqual([]);
  });
});

describe('every problem is reported', () => {
  test('schema errors and cross-field errors together, sorted by position', () => {
    const out = check(
      'runtime: { workers: -1 }',
      'upstreams:',
      '  - name: app',
      '    backends: ["127.0.0.1:9001", "127.0.0.1:9001"]',
      '    healthCheck: { intervall: 1s }',
      'listeners:',
      '  - { name: in, protocol: tcp, listen: 15000, upstream: db }',
      '  - { name: web, protocol: http, listen: 15000, routes: [] }',
    );
    expect(out).toEqual([
      'gh.yaml:1:21 runtime.workers: must be >= 0, got -1',
      'gh.yaml:4:34 upstreams.0.backends.1: duplicate backend "127.0.0.1:9001" (first at upstreams.0.backends.0)',
      'gh.yaml:5:20 upstreams.0.healthCheck.intervall: unknown key (did you mean "interval"?)',
      'gh.yaml:7:57 listeners.0.upstream: unknown upstream "db" (known: app)',
      'gh.yaml:8:42 listeners.1.listen: address 15000 is already used by listeners.0 (in)',
      'gh.yaml:8:57 listeners.1.routes: an http listener needs at least one route',
    ]);
  });

  test('the error carries the issues and the code', () => {
    const err = (() => {
      try {
        parseConfig('log: { level: loud }\nruntime: { debug: 1 }', 'a/b.yaml');
      } catch (e) {
        return e as ConfigError;
      }
    })();
    expect(err?.code).toBe('GH_ERR_CONFIG');
    expect(err?.issues).toEqual([
      { file: 'a/b.yaml', line: 1, col: 15, path: 'log.level', message: 'expected one of fatal, error, warn, info, debug, trace, silent, got a string ("loud")' },
      { file: 'a/b.yaml', line: 2, col: 19, path: 'runtime.debug', message: 'expected true or false, got a number (1)' },
    ]);
    expect(err?.message.split('\n')).toHaveLength(2);
  });
});

describe('YAML syntax errors', () => {
  test('get a position too', () => {
    expect(check('log:', '  level: info', '  level: debug')).toEqual(['gh.yaml:3:3 log.level: YAML: duplicate key']);
    expect(check('log:', '\tlevel: info')).toEqual(['gh.yaml:2:1 (root): YAML: Tabs are not allowed as indentation']);
    expect(check('a: 1', '---', 'b: 2')).toEqual(['gh.yaml:2:1 (root): YAML: a config file holds one document (remove the second ---)']);
  });
});

describe('http listener keys', () => {
  const HTTP = (extra: string) => [UP, 'listeners:', `  - { name: web, protocol: http, listen: 8080, routes: [ { upstream: app } ]${extra} }`];

  test('defaults follow the contract', () => {
    const l = parseConfig(HTTP('').join('\n'), 'gh.yaml').listeners[0]!;
    expect(l).toMatchObject({
      trustedProxies: [],
      xForwardedFor: 'append',
      maxHeaderSize: 16 * 1024,
      maxBodySize: 0,
      headersTimeout: 10_000,
      keepAliveTimeout: 60_000,
      maxRequestsPerConnection: 0,
      accessLog: false,
    });
  });

  test('trustedProxies takes addresses and CIDRs, and names a bad one at its index', () => {
    const ok = parseConfig(HTTP(', trustedProxies: [ 10.0.0.0/8, "::1", "fd00::/8" ], maxBodySize: 10MiB, accessLog: { sample: 0.01 }').join('\n'), 'gh.yaml').listeners[0]!;
    expect(ok).toMatchObject({ trustedProxies: ['10.0.0.0/8', '::1', 'fd00::/8'], maxBodySize: 10 * 1024 * 1024, accessLog: { sample: 0.01 } });
    const issues = check(...HTTP(', trustedProxies: [ 10.0.0.0/8, 10.0.0.0/33 ]'));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^gh\.yaml:3:\d+ listeners\.0\.trustedProxies\.1: invalid CIDR "10\.0\.0\.0\/33"/);
    expect(check(...HTTP(', xForwardedFor: prepend'))[0]).toMatch(/listeners\.0\.xForwardedFor/);
    expect(check(...HTTP(', accessLog: { sample: 2 }'))[0]).toMatch(/listeners\.0\.accessLog/);
  });
});
