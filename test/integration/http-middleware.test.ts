/**
 * The per-route middleware of the HTTP listener, end to end: a real daemon (two shards) in front
 * of node:http backends that echo what they received (method, target, raw header list). Requests
 * are written as raw bytes on node:net sockets, so what is asserted is exactly what a client and
 * a backend see: routing precedence, forwarded headers and request ids, hop-by-hop removal,
 * route header rules, CORS, route rate limits (exact across shards) and split / sticky.
 */
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir } from '../helpers/daemon.ts';

// ---- an echo backend ------------------------------------------------------------------------

interface Seen {
  backend: string;
  method: string;
  url: string;
  /** The raw header list as received: name, value, name, value... */
  raw: string[];
}

interface EchoBackend {
  name: string;
  port: number;
  /** Every request received, in order. */
  seen: Seen[];
  close(): Promise<void>;
}

/**
 * A node:http backend on 127.0.0.1:0 that answers every request with the JSON of what it
 * received, plus a few fields the gateway should rewrite (`server`, `x-backend-secret`, its own
 * `access-control-allow-origin`); on a path containing `hop-response` it also sends hop-by-hop
 * fields of its own.
 */
async function echoBackend(name: string): Promise<EchoBackend> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const rec: Seen = { backend: name, method: req.method ?? '', url: req.url ?? '', raw: req.rawHeaders };
    seen.push(rec);
    res.setHeader('content-type', 'application/json');
    res.setHeader('server', `echo-${name}`);
    res.setHeader('x-backend-secret', 'hunter2');
    res.setHeader('access-control-allow-origin', 'https://backend.example');
    if (rec.url.includes('hop-response')) {
      res.setHeader('connection', 'x-resp-hop');
      res.setHeader('x-resp-hop', 'listed in connection');
      res.setHeader('keep-alive', 'timeout=5');
      res.setHeader('proxy-connection', 'keep-alive');
    }
    res.end(JSON.stringify(rec));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    name,
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

// ---- a raw HTTP/1.1 client ------------------------------------------------------------------

interface Res {
  status: number;
  /** Lowercase names, in order, duplicates kept. */
  headers: [string, string][];
  body: string;
}

/** All values of response field `name`. */
function values(r: Res, name: string): string[] {
  return r.headers.filter(([n]) => n === name).map(([, v]) => v);
}
/** The one value of response field `name` (fails when it is sent twice), or undefined. */
function one(r: Res, name: string): string | undefined {
  const v = values(r, name);
  expect(v.length, `${name} at most once in ${JSON.stringify(r.headers)}`).toBeLessThanOrEqual(1);
  return v[0];
}
/** All values of field `name` the backend received (case-insensitive). */
function got(s: Seen, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.raw.length; i += 2) if (s.raw[i]!.toLowerCase() === name) out.push(s.raw[i + 1]!);
  return out;
}
function gotNames(s: Seen): string[] {
  return s.raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
}

/** Parses one response at the start of `buf`; undefined when it is not complete yet. */
function parseResponse(buf: Buffer, headRequest: boolean, closed: boolean): { res: Res; used: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1]);
  const headers = lines.slice(1).map((l): [string, string] => {
    const c = l.indexOf(':');
    return [l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()];
  });
  const start = end + 4;
  const te = headers.find(([n]) => n === 'transfer-encoding')?.[1];
  const cl = headers.find(([n]) => n === 'content-length')?.[1];
  if (headRequest || status === 204 || status === 304 || status < 200) return { res: { status, headers, body: '' }, used: start };
  if (te !== undefined && /chunked/i.test(te)) {
    let p = start;
    const parts: Buffer[] = [];
    for (;;) {
      const eol = buf.indexOf('\r\n', p);
      if (eol < 0) return undefined;
      const size = parseInt(buf.subarray(p, eol).toString('latin1'), 16);
      if (size === 0) {
        const fin = buf.indexOf('\r\n\r\n', eol);
        if (fin < 0 && buf.indexOf('\r\n', eol + 2) !== eol + 2) return undefined;
        return { res: { status, headers, body: Buffer.concat(parts).toString() }, used: fin < 0 ? eol + 4 : fin + 4 };
      }
      if (buf.length < eol + 2 + size + 2) return undefined;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      p = eol + 2 + size + 2;
    }
  }
  if (cl !== undefined) {
    const n = Number(cl);
    if (buf.length < start + n) return undefined;
    return { res: { status, headers, body: buf.subarray(start, start + n).toString() }, used: start + n };
  }
  if (!closed) return undefined;
  return { res: { status, headers, body: buf.subarray(start).toString() }, used: buf.length };
}

/** One client connection: write raw requests, read responses one by one (pipelining allowed). */
class Client {
  readonly socket: net.Socket;
  #buf = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#wake?.();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake?.();
    });
    socket.on('error', () => {});
  }

  static async open(port: number): Promise<Client> {
    const s = net.connect({ port, host: '127.0.0.1' });
    const c = new Client(s);
    await once(s, 'connect');
    return c;
  }

  write(data: string): void {
    this.socket.write(data, 'latin1');
  }

  /** The next response (`head`: it answers a HEAD request, so it has no body). */
  async response(head = false, timeoutMs = 10_000): Promise<Res> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = parseResponse(this.#buf, head, this.#closed);
      if (r !== undefined) {
        this.#buf = this.#buf.subarray(r.used);
        return r.res;
      }
      if (this.#closed) throw new Error(`connection closed before a complete response: ${JSON.stringify(this.#buf.toString('latin1'))}`);
      if (Date.now() > deadline) throw new Error(`no complete response within ${timeoutMs} ms: ${JSON.stringify(this.#buf.toString('latin1'))}`);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 100).unref();
      });
    }
  }

  /** Resolves when the server has closed the connection. */
  async closed(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed) {
      if (Date.now() > deadline) throw new Error('connection not closed by the gateway');
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 100).unref();
      });
    }
  }

  async close(): Promise<void> {
    if (this.socket.destroyed) return;
    this.socket.destroy();
    await once(this.socket, 'close');
  }
}

interface Req {
  method?: string;
  path?: string;
  /** The Host field; null for none. */
  host?: string | null;
  headers?: [string, string][];
  body?: string;
}

function rawRequest(r: Req): string {
  const method = r.method ?? 'GET';
  let s = `${method} ${r.path ?? '/'} HTTP/1.1\r\n`;
  if (r.host !== null) s += `Host: ${r.host ?? 'other.org'}\r\n`;
  for (const [n, v] of r.headers ?? []) s += `${n}: ${v}\r\n`;
  if (r.body !== undefined) s += `Content-Length: ${Buffer.byteLength(r.body)}\r\n`;
  return `${s}\r\n${r.body ?? ''}`;
}

/** One request on a new connection; `seen` is the backend's echo when the body is one. */
async function send(port: number, r: Req): Promise<Res & { seen: Seen | undefined }> {
  const c = await Client.open(port);
  try {
    c.write(rawRequest(r));
    const res = await c.response(r.method === 'HEAD');
    let seen: Seen | undefined;
    try {
      const j = JSON.parse(res.body) as Partial<Seen>;
      if (typeof j.backend === 'string' && Array.isArray(j.raw)) seen = j as Seen;
    } catch {
      seen = undefined;
    }
    return { ...res, seen };
  } finally {
    await c.close();
  }
}

/** `n` requests over `conns` kept-alive connections; resolves with every response, in no particular order. */
async function many(port: number, n: number, conns: number, make: (i: number) => Req): Promise<(Res & { seen: Seen })[]> {
  const out: (Res & { seen: Seen })[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: conns }, async () => {
      const c = await Client.open(port);
      try {
        while (next < n) {
          const i = next++;
          c.write(rawRequest(make(i)));
          const res = await c.response();
          out[i] = { ...res, seen: JSON.parse(res.body) as Seen };
        }
      } finally {
        await c.close();
      }
    }),
  );
  return out;
}

const ID = /^[0-9a-z]{16}-[0-9a-z]+$/;

// ---- the daemon ---------------------------------------------------------------------------

/** Every route sets `x-route: NAME` upstream, so the backend's echo says which route served. */
function route(name: string, r: Record<string, unknown>): Record<string, unknown> {
  const headers = (r.headers ?? {}) as { request?: { set?: Record<string, string>; remove?: string[] } };
  return { name, ...r, headers: { ...headers, request: { ...headers.request, set: { ...headers.request?.set, 'x-route': name } } } };
}

function config(a: EchoBackend, b: EchoBackend, c: EchoBackend): string {
  const upstream = (u: EchoBackend) => ({ name: u.name, backends: [`127.0.0.1:${u.port}`], healthCheck: { enabled: false } });
  const cfg = {
    admin: { listen: '127.0.0.1:0' },
    runtime: { workers: 2, shutdownTimeout: '5s' },
    log: { level: 'info' },
    upstreams: [upstream(a), upstream(b), upstream(c)],
    listeners: [
      {
        name: 'web',
        protocol: 'http',
        listen: '127.0.0.1:0',
        routes: [
          // Host tiers.
          route('exact-v1', { match: { host: 'api.example.com', pathPrefix: '/v1' }, upstream: 'a', stripPrefix: true }),
          route('exact-admin', { match: { host: 'api.example.com', pathPrefix: '/admin', methods: ['POST'] }, upstream: 'a' }),
          route('wild', { match: { host: '*.example.com' }, upstream: 'b' }),
          route('wild-deep', { match: { host: '*.deep.example.com', pathPrefix: '/d' }, upstream: 'b' }),
          // No host: prefixes on a segment boundary, then methods.
          route('v1', { match: { pathPrefix: '/v1' }, upstream: 'a' }),
          route('v10', { match: { pathPrefix: '/v10' }, upstream: 'b' }),
          route('slash', { match: { pathPrefix: '/dir/' }, upstream: 'a', stripPrefix: true }),
          route('uploads', { match: { pathPrefix: '/files', methods: ['PUT', 'POST'] }, upstream: 'a' }),
          route('files-read', { match: { pathPrefix: '/files', methods: ['GET', 'HEAD'] }, upstream: 'b' }),
          route('m-any', { match: { pathPrefix: '/m' }, upstream: 'a' }),
          route('m-post', { match: { pathPrefix: '/m', methods: ['post'] }, upstream: 'b' }),
          // Header rules.
          route('rules', {
            match: { pathPrefix: '/rules' },
            upstream: 'a',
            headers: {
              request: { set: { 'X-Env': 'prod', 'X-Forwarded-Proto': 'https', Host: 'internal.svc' }, remove: ['Cookie', 'x-remove-me'] },
              response: { set: { 'Strict-Transport-Security': 'max-age=63072000' }, remove: ['Server', 'X-Backend-Secret'] },
            },
          }),
          // CORS.
          route('cors', {
            match: { pathPrefix: '/cors', methods: ['GET', 'POST'] },
            upstream: 'a',
            cors: { origins: ['https://app.example.com'], credentials: true, maxAge: 600, headers: ['content-type', 'x-api-key'], exposeHeaders: ['x-total'] },
          }),
          route('cors-any', { match: { pathPrefix: '/open' }, upstream: 'a', cors: { origins: ['*'] } }),
          // Rate limits.
          route('rl-ip', { match: { pathPrefix: '/rl-ip' }, upstream: 'a', rateLimit: { perSecond: 5, burst: 5, key: 'ip' } }),
          route('rl-key', { match: { pathPrefix: '/rl-key' }, upstream: 'a', rateLimit: { perSecond: 0.05, burst: 2, key: 'header:X-Api-Key' } }),
          route('rl-exact', { match: { pathPrefix: '/rl-exact' }, upstream: 'a', rateLimit: { perSecond: 0.05, burst: 10 } }),
          route('rl-spoof', { match: { pathPrefix: '/rl-spoof' }, upstream: 'a', rateLimit: { perSecond: 0.05, burst: 1 } }),
          // Split and sticky.
          route('split', { match: { pathPrefix: '/split' }, split: [{ upstream: 'a', weight: 90 }, { upstream: 'b', weight: 10 }] }),
          route('sticky-h', { match: { pathPrefix: '/sticky-h' }, split: [{ upstream: 'a', weight: 90 }, { upstream: 'b', weight: 10 }], sticky: { header: 'X-User' } }),
          route('sticky-c', { match: { pathPrefix: '/sticky-c' }, split: [{ upstream: 'a', weight: 90 }, { upstream: 'b', weight: 10 }], sticky: { cookie: 'session' } }),
          // Everything else, GET only.
          route('default', { match: { pathPrefix: '/', methods: ['GET'] }, upstream: 'c' }),
        ],
      },
      { name: 'replace', protocol: 'http', listen: '127.0.0.1:0', xForwardedFor: 'replace', accessLog: true, routes: [route('rep', { upstream: 'a' })] },
      {
        name: 'trusted',
        protocol: 'http',
        listen: '127.0.0.1:0',
        trustedProxies: ['127.0.0.1/32'],
        accessLog: true,
        routes: [
          route('tru', { match: { pathPrefix: '/echo' }, upstream: 'a' }),
          route('tru-rl', { match: { pathPrefix: '/rl' }, upstream: 'a', rateLimit: { perSecond: 0.05, burst: 1, key: 'ip' } }),
        ],
      },
    ],
  };
  return JSON.stringify(cfg, null, 1);
}

describe('HTTP listener middleware, end to end', () => {
  let a: EchoBackend;
  let b: EchoBackend;
  let c: EchoBackend;
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let web: number;

  beforeAll(async () => {
    [a, b, c] = await Promise.all([echoBackend('a'), echoBackend('b'), echoBackend('c')]);
    dir = tempDir();
    gh = await Daemon.start(dir.write('gh.yaml', config(a, b, c)));
    web = gh.port('web');
  });

  afterAll(async () => {
    await gh?.[Symbol.asyncDispose]();
    await Promise.all([a?.close(), b?.close(), c?.close()]);
    dir?.[Symbol.dispose]();
  });

  /** The route that served a request (its `x-route`), the target the backend got. */
  async function routed(r: Req): Promise<{ route: string; url: string; backend: string } | { status: number; allow: string | undefined; error: string }> {
    const res = await send(web, r);
    if (res.seen === undefined) return { status: res.status, allow: one(res, 'allow'), error: (JSON.parse(res.body) as { error: string }).error };
    expect(res.status).toBe(200);
    expect(got(res.seen, 'x-route')).toHaveLength(1);
    return { route: got(res.seen, 'x-route')[0]!, url: res.seen.url, backend: res.seen.backend };
  }

  describe('routing precedence', () => {
    test.each<[string, Req, unknown]>([
      ['exact host, longest prefix, stripPrefix', { host: 'api.example.com', path: '/v1/users?page=2' }, { route: 'exact-v1', url: '/users?page=2' }],
      ['host without port and case; query right after the prefix', { host: 'API.Example.com:8080', path: '/v1?x=1' }, { route: 'exact-v1', url: '/?x=1' }],
      ['stripPrefix of the whole path gives /', { host: 'api.example.com', path: '/v1' }, { route: 'exact-v1', url: '/' }],
      ['a trailing dot on the host', { host: 'api.example.com.', path: '/v1/x' }, { route: 'exact-v1', url: '/x' }],
      ['exact tier without a fitting prefix (/v10 is not /v1): the wildcard tier', { host: 'api.example.com', path: '/v10' }, { route: 'wild', url: '/v10' }],
      ['wildcard tier', { host: 'shop.example.com', path: '/cart' }, { route: 'wild', url: '/cart' }],
      ['wildcard over several labels', { host: 'a.b.example.com', path: '/cart' }, { route: 'wild', url: '/cart' }],
      ['a wildcard never matches its bare suffix', { host: 'example.com', path: '/cart' }, { route: 'default', url: '/cart' }],
      ['the longest wildcard suffix first', { host: 'x.deep.example.com', path: '/d/1' }, { route: 'wild-deep', url: '/d/1' }],
      ['a longer wildcard without a fitting prefix: the shorter wildcard', { host: 'x.deep.example.com', path: '/e' }, { route: 'wild', url: '/e' }],
      ['the wildcard tier fits the path: no-host routes are not seen', { host: 'shop.example.com', path: '/files/a.png' }, { route: 'wild', url: '/files/a.png' }],
      ['no-host tier: /v1 fits /v1/x', { path: '/v1/x' }, { route: 'v1', url: '/v1/x' }],
      ['/v1 fits /v1?q', { path: '/v1?q' }, { route: 'v1', url: '/v1?q' }],
      ['/v10 beats /v1 for /v10/x', { path: '/v10/x' }, { route: 'v10', url: '/v10/x' }],
      ['neither /v1 nor /v10 fits /v100', { path: '/v100' }, { route: 'default', url: '/v100' }],
      ['a prefix ending in / fits below it', { path: '/dir/x?y' }, { route: 'slash', url: '/x?y' }],
      ['a prefix ending in / does not fit the path without the slash', { path: '/dir' }, { route: 'default', url: '/dir' }],
      ['paths are case-sensitive', { path: '/V1/x' }, { route: 'default', url: '/V1/x' }],
      ['a method listed', { method: 'PUT', path: '/files/a.png', body: 'x' }, { route: 'uploads', url: '/files/a.png' }],
      ['POST on the /files route that lists it', { method: 'POST', path: '/files', body: '' }, { route: 'uploads', url: '/files' }],
      ['a method-specific route beats an earlier route without methods', { method: 'POST', path: '/m/1', body: '' }, { route: 'm-post', url: '/m/1' }],
      ['the route without methods takes the others', { method: 'DELETE', path: '/m/1' }, { route: 'm-any', url: '/m/1' }],
      ['an absolute-form target is routed by its path and sent in origin form', { path: 'http://other.org/v10/x?q' }, { route: 'v10', url: '/v10/x?q' }],
    ])('%s', async (_, req, want) => {
      expect(await routed(req)).toMatchObject(want as object);
    });

    test('405 lists the methods of the routes that fit, in canonical order; the next tier is not tried', async () => {
      expect(await routed({ method: 'DELETE', path: '/files/a.png' })).toEqual({ status: 405, allow: 'GET, HEAD, POST, PUT', error: 'method_not_allowed' });
      expect(await routed({ method: 'POST', path: '/about', body: '' })).toEqual({ status: 405, allow: 'GET', error: 'method_not_allowed' });
      // api.example.com /admin takes POST only: a GET is 405 there, not the wildcard's 200.
      expect(await routed({ host: 'api.example.com', path: '/admin/x' })).toEqual({ status: 405, allow: 'POST', error: 'method_not_allowed' });
      expect(await routed({ host: 'api.example.com', method: 'POST', path: '/admin/x', body: '' })).toMatchObject({ route: 'exact-admin' });
    });

    test('HEAD on a GET/HEAD route is forwarded as HEAD and answered without a body', async () => {
      const before = b.seen.length;
      const res = await send(web, { method: 'HEAD', path: '/files/a.png' });
      expect(res.status).toBe(200);
      expect(res.body).toBe('');
      expect(b.seen.length).toBe(before + 1);
      expect(b.seen.at(-1)).toMatchObject({ method: 'HEAD', url: '/files/a.png' });
      expect(got(b.seen.at(-1)!, 'x-route')).toEqual(['files-read']);
    });

    test('a dot-segment in the path is refused (400), never resolved to another route', async () => {
      for (const path of ['/v1/../admin', '/v1/./x', '/v1/%2e%2E/x', '/v1/..', '/./v1']) {
        const before = a.seen.length + b.seen.length;
        expect(await routed({ path })).toMatchObject({ status: 400, error: 'bad_request' });
        expect(a.seen.length + b.seen.length).toBe(before);
      }
      // Dots inside a segment are ordinary characters.
      expect(await routed({ path: '/v1/file.v2..txt?x=../y' })).toMatchObject({ route: 'v1', url: '/v1/file.v2..txt?x=../y' });
    });

    test('a preflight for a method whose route has no cors is routed as the OPTIONS it is (405)', async () => {
      const before = a.seen.length + b.seen.length;
      expect(await routed({ method: 'OPTIONS', path: '/files', headers: [['Origin', 'https://x.example'], ['Access-Control-Request-Method', 'PUT']] }))
        .toEqual({ status: 405, allow: 'GET, HEAD, POST, PUT', error: 'method_not_allowed' });
      expect(a.seen.length + b.seen.length).toBe(before);
    });

    test('no route for host and path: 404 no_route with a request id', async () => {
      const res = await send(gh.port('trusted'), { path: '/nothing' });
      expect(res.status).toBe(404);
      expect(JSON.parse(res.body)).toEqual({ error: 'no_route', requestId: one(res, 'x-request-id') });
      expect(one(res, 'x-request-id')).toMatch(ID);
    });
  });

  test('a kept-alive connection goes on after the gateway\'s own answers (405, 204 preflight, 403), pipelined or not', async () => {
    const reqs: Req[] = [
      { method: 'DELETE', path: '/files/x' },
      { path: '/v1/a' },
      { method: 'OPTIONS', path: '/cors/x', headers: [['Origin', 'https://app.example.com'], ['Access-Control-Request-Method', 'GET']] },
      { path: '/v1/b' },
      { method: 'OPTIONS', path: '/cors/x', headers: [['Origin', 'https://evil.example'], ['Access-Control-Request-Method', 'GET']] },
      { path: '/v1/c' },
    ];
    const want = [405, 200, 204, 200, 403, 200];
    const cl = await Client.open(web);
    try {
      // One at a time, then all six in one write: answered in order, none dropped.
      const one: number[] = [];
      for (const r of reqs) {
        cl.write(rawRequest(r));
        one.push((await cl.response()).status);
      }
      expect(one).toEqual(want);
      cl.write(reqs.map(rawRequest).join(''));
      const piped: Res[] = [];
      for (let i = 0; i < reqs.length; i++) piped.push(await cl.response());
      expect(piped.map((r) => r.status)).toEqual(want);
      expect(piped.filter((r) => r.status === 200).map((r) => (JSON.parse(r.body) as Seen).url)).toEqual(['/v1/a', '/v1/b', '/v1/c']);
      // And the pooled upstream sockets those requests used still serve.
      for (let i = 0; i < 3; i++) expect((await send(web, { path: '/v1' })).status).toBe(200);
    } finally {
      await cl.close();
    }
  });

  describe('forwarded headers and the request id', () => {
    test('X-Forwarded-For: the peer is appended to every incoming field, joined in order', async () => {
      const none = await send(web, { path: '/v1' });
      expect(got(none.seen!, 'x-forwarded-for')).toEqual(['127.0.0.1']);
      const two = await send(web, { path: '/v1', headers: [['X-Forwarded-For', '198.51.100.1'], ['x-forwarded-for', '203.0.113.7, 10.0.0.1']] });
      expect(got(two.seen!, 'x-forwarded-for')).toEqual(['198.51.100.1, 203.0.113.7, 10.0.0.1, 127.0.0.1']);
    });

    test('xForwardedFor: replace sends the peer alone; the client address is the peer', async () => {
      const res = await send(gh.port('replace'), { path: '/', headers: [['X-Forwarded-For', '203.0.113.7'], ['X-Request-Id', 'replace-1']] });
      expect(got(res.seen!, 'x-forwarded-for')).toEqual(['127.0.0.1']);
      const line = await gh.waitForLog((l) => l.msg === 'request' && l.requestId === 'replace-1');
      expect(line).toMatchObject({ listener: 'replace', route: 'rep', status: 200, remoteAddress: '127.0.0.1' });
    });

    test('from an untrusted peer, incoming X-Forwarded-Proto/Host/Port are replaced by the gateway\'s', async () => {
      const res = await send(web, {
        host: 'other.org:1234',
        path: '/v1',
        headers: [['X-Forwarded-Proto', 'https'], ['X-Forwarded-Host', 'evil.example'], ['X-Forwarded-Port', '443']],
      });
      const s = res.seen!;
      expect(got(s, 'x-forwarded-proto')).toEqual(['http']);
      expect(got(s, 'x-forwarded-host')).toEqual(['other.org:1234']);
      expect(got(s, 'x-forwarded-port')).toEqual([String(web)]);
      expect(got(s, 'host')).toEqual(['other.org:1234']);
    });

    test('from a trusted peer they are kept, and the client address is the right-most untrusted X-Forwarded-For entry', async () => {
      const res = await send(gh.port('trusted'), {
        path: '/echo',
        headers: [
          ['X-Forwarded-Proto', 'https'], ['X-Forwarded-Host', 'public.example'], ['X-Forwarded-Port', '443'],
          ['X-Forwarded-For', '198.51.100.9, 203.0.113.7, 127.0.0.1'], ['X-Request-Id', 'trusted-1'],
        ],
      });
      const s = res.seen!;
      expect(got(s, 'x-forwarded-proto')).toEqual(['https']);
      expect(got(s, 'x-forwarded-host')).toEqual(['public.example']);
      expect(got(s, 'x-forwarded-port')).toEqual(['443']);
      expect(got(s, 'x-forwarded-for')).toEqual(['198.51.100.9, 203.0.113.7, 127.0.0.1, 127.0.0.1']);
      const line = await gh.waitForLog((l) => l.msg === 'request' && l.requestId === 'trusted-1');
      expect(line).toMatchObject({ listener: 'trusted', route: 'tru', remoteAddress: '203.0.113.7' });
    });

    test('from a trusted peer, an X-Forwarded-Proto/Host/Port named in Connection is dropped and the gateway sends its own', async () => {
      const res = await send(gh.port('trusted'), {
        path: '/echo',
        headers: [['Connection', 'X-Forwarded-Proto, x-forwarded-host, X-Forwarded-Port'], ['X-Forwarded-Proto', 'https'], ['X-Forwarded-Host', 'hop.example'], ['X-Forwarded-Port', '1']],
      });
      const s = res.seen!;
      expect(got(s, 'x-forwarded-proto')).toEqual(['http']);
      expect(got(s, 'x-forwarded-host')).toEqual(['other.org']);
      expect(got(s, 'x-forwarded-port')).toEqual([String(gh.port('trusted'))]);
    });

    test('a valid X-Request-Id (1-128 visible ASCII) is kept, sent upstream once and returned', async () => {
      for (const id of ['req-42', 'x'.repeat(128), '"q\\!~{}']) {
        const res = await send(web, { path: '/v1', headers: [['X-Request-Id', id]] });
        expect(got(res.seen!, 'x-request-id')).toEqual([id]);
        expect(one(res, 'x-request-id')).toBe(id);
      }
    });

    test.each<[string, [string, string][]]>([
      ['absent', []],
      ['empty', [['X-Request-Id', '']]],
      ['129 characters', [['X-Request-Id', 'x'.repeat(129)]]],
      ['with a space', [['X-Request-Id', 'a b']]],
      ['with a byte above ASCII', [['X-Request-Id', 'caf\xe9']]],
    ])('an X-Request-Id %s is replaced by a generated one, the same upstream and to the client', async (_, headers) => {
      const res = await send(web, { path: '/v1', headers });
      const id = one(res, 'x-request-id')!;
      expect(id).toMatch(ID);
      expect(got(res.seen!, 'x-request-id')).toEqual([id]);
    });

    test('the gateway\'s own answers carry the request id too', async () => {
      const res = await send(web, { method: 'DELETE', path: '/files/x', headers: [['X-Request-Id', 'mine-405']] });
      expect(res.status).toBe(405);
      expect(one(res, 'x-request-id')).toBe('mine-405');
      expect(JSON.parse(res.body)).toEqual({ error: 'method_not_allowed', requestId: 'mine-405' });
    });
  });

  describe('hop-by-hop fields and route header rules', () => {
    test('Connection and the fields it names, Keep-Alive, TE, Trailer, Proxy-Connection and Upgrade never reach the backend', async () => {
      const res = await send(web, {
        path: '/v1',
        headers: [
          ['Connection', 'keep-alive, X-Hop-A'],
          ['Connection', 'x-hop-b'],
          ['X-Hop-A', '1'],
          ['X-HOP-B', '2'],
          ['Keep-Alive', 'timeout=5'],
          ['TE', 'trailers'],
          ['Trailer', 'x-checksum'],
          ['Proxy-Connection', 'keep-alive'],
          // Without `upgrade` in Connection this is no upgrade request: the field is dropped.
          ['Upgrade', 'websocket'],
          ['X-Keep', 'yes'],
        ],
      });
      expect(res.status).toBe(200);
      const names = gotNames(res.seen!);
      for (const n of ['connection', 'x-hop-a', 'x-hop-b', 'keep-alive', 'te', 'trailer', 'proxy-connection', 'upgrade']) expect(names, n).not.toContain(n);
      expect(got(res.seen!, 'x-keep')).toEqual(['yes']);
    });

    test('Host is never dropped for being named in Connection: the backend always gets it', async () => {
      const res = await send(web, { host: 'other.org', path: '/v1', headers: [['Connection', 'Host, X-Hop']] });
      expect(res.status).toBe(200);
      expect(got(res.seen!, 'host')).toEqual(['other.org']);
    });

    test('Upgrade with Connection: upgrade on a route without websocket: 403 upgrade_not_allowed, backend not reached', async () => {
      const before = a.seen.length;
      const res = await send(web, { path: '/v1', headers: [['Connection', 'Upgrade'], ['Upgrade', 'websocket']] });
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'upgrade_not_allowed' });
      expect(a.seen.length).toBe(before);
    });

    test('the backend\'s hop-by-hop fields never reach the client', async () => {
      const res = await send(web, { path: '/v1/hop-response' });
      expect(res.status).toBe(200);
      const names = res.headers.map(([n]) => n);
      for (const n of ['x-resp-hop', 'keep-alive', 'proxy-connection']) expect(names, n).not.toContain(n);
      expect(values(res, 'connection').join()).not.toMatch(/x-resp-hop/i);
      expect(one(res, 'x-backend-secret')).toBe('hunter2');
    });

    test('headers.request set replaces (any case, gateway fields and Host too) and remove drops', async () => {
      const res = await send(web, {
        path: '/rules/x',
        headers: [['x-env', 'dev'], ['X-ENV', 'test'], ['Cookie', 'session=1'], ['X-Remove-Me', 'x'], ['X-Forwarded-Proto', 'http'], ['X-Other', 'kept']],
      });
      const s = res.seen!;
      expect(got(s, 'x-env')).toEqual(['prod']);
      expect(got(s, 'x-forwarded-proto')).toEqual(['https']);
      expect(got(s, 'host')).toEqual(['internal.svc']);
      expect(got(s, 'cookie')).toEqual([]);
      expect(got(s, 'x-remove-me')).toEqual([]);
      expect(got(s, 'x-other')).toEqual(['kept']);
      // The gateway's X-Forwarded-Host is still the client's Host.
      expect(got(s, 'x-forwarded-host')).toEqual(['other.org']);
    });

    test('headers.response set and remove apply to what the client gets', async () => {
      const res = await send(web, { path: '/rules/x' });
      expect(one(res, 'strict-transport-security')).toBe('max-age=63072000');
      expect(values(res, 'server')).toEqual([]);
      expect(values(res, 'x-backend-secret')).toEqual([]);
      expect(one(res, 'content-type')).toBe('application/json');
      // On another route the backend's fields pass.
      const plain = await send(web, { path: '/v1' });
      expect(one(plain, 'server')).toBe('echo-a');
      expect(values(plain, 'strict-transport-security')).toEqual([]);
    });
  });

  describe('CORS', () => {
    const ORIGIN = 'https://app.example.com';

    test('a preflight from an allowed origin: 204 with the Access-Control-* fields, never reaching the backend, though the route excludes OPTIONS', async () => {
      const before = a.seen.length;
      const res = await send(web, {
        method: 'OPTIONS',
        path: '/cors/items',
        headers: [['Origin', ORIGIN], ['Access-Control-Request-Method', 'POST'], ['Access-Control-Request-Headers', 'x-other']],
      });
      expect(res.status).toBe(204);
      expect(one(res, 'access-control-allow-origin')).toBe(ORIGIN);
      expect(one(res, 'access-control-allow-methods')).toBe('GET, POST');
      // The route's cors.headers, not the request's.
      expect(one(res, 'access-control-allow-headers')).toBe('content-type, x-api-key');
      expect(one(res, 'access-control-max-age')).toBe('600');
      expect(one(res, 'access-control-allow-credentials')).toBe('true');
      expect(one(res, 'vary')).toBe('Origin');
      expect(one(res, 'x-request-id')).toMatch(ID);
      expect(res.body).toBe('');
      expect(a.seen.length).toBe(before);
    });

    test('a preflight on a route with origins ["*"] and no methods: the default methods, the request\'s headers echoed', async () => {
      const before = a.seen.length;
      const res = await send(web, {
        method: 'OPTIONS',
        path: '/open',
        headers: [['Origin', 'https://anyone.example'], ['Access-Control-Request-Method', 'DELETE'], ['Access-Control-Request-Headers', 'x-a, x-b']],
      });
      expect(res.status).toBe(204);
      expect(one(res, 'access-control-allow-origin')).toBe('https://anyone.example');
      expect(one(res, 'access-control-allow-methods')).toBe('GET, HEAD, POST, PUT, DELETE, PATCH');
      expect(one(res, 'access-control-allow-headers')).toBe('x-a, x-b');
      expect(values(res, 'access-control-allow-credentials')).toEqual([]);
      expect(a.seen.length).toBe(before);
    });

    test('a preflight from another origin: 403 forbidden without Access-Control-Allow-Origin, backend not reached', async () => {
      const before = a.seen.length;
      const res = await send(web, { method: 'OPTIONS', path: '/cors/items', headers: [['Origin', 'https://evil.example'], ['Access-Control-Request-Method', 'GET']] });
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'forbidden' });
      expect(values(res, 'access-control-allow-origin')).toEqual([]);
      expect(a.seen.length).toBe(before);
    });

    test('a request from an allowed origin is forwarded and its response gets the CORS fields (the backend\'s own dropped)', async () => {
      const res = await send(web, { path: '/cors/items', headers: [['Origin', ORIGIN]] });
      expect(res.status).toBe(200);
      expect(got(res.seen!, 'origin')).toEqual([ORIGIN]);
      expect(values(res, 'access-control-allow-origin')).toEqual([ORIGIN]);
      expect(one(res, 'access-control-allow-credentials')).toBe('true');
      expect(one(res, 'access-control-expose-headers')).toBe('x-total');
      expect(one(res, 'vary')).toBe('Origin');
    });

    test('a request from another origin is forwarded, without Access-Control-Allow-Origin', async () => {
      const res = await send(web, { path: '/cors/items', headers: [['Origin', 'https://evil.example']] });
      expect(res.status).toBe(200);
      expect(res.seen).toBeDefined();
      expect(values(res, 'access-control-allow-origin')).toEqual([]);
      // The answer still varies by Origin: a shared cache must not serve it to a listed origin.
      expect(one(res, 'vary')).toBe('Origin');
      const none = await send(web, { path: '/cors/items' });
      expect(values(none, 'access-control-allow-origin')).toEqual([]);
      expect(one(none, 'vary')).toBe('Origin');
    });

    test('OPTIONS without Access-Control-Request-Method is no preflight: the route\'s methods apply (405)', async () => {
      const res = await send(web, { method: 'OPTIONS', path: '/cors/items', headers: [['Origin', ORIGIN]] });
      expect(res.status).toBe(405);
      expect(one(res, 'allow')).toBe('GET, POST');
    });
  });

  describe('route rate limits', () => {
    test('perSecond 5, burst 5, key ip: the 6th request within a second is 429 rate_limited with Retry-After, counted per route', async () => {
      // Six requests at once (a new connection each): all arrive well within the 200 ms that
      // refill one place, so exactly one of them is refused.
      const res = await Promise.all(Array.from({ length: 6 }, () => send(web, { path: '/rl-ip' })));
      expect(res.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 429]);
      const refused = res.find((r) => r.status === 429)!;
      expect(JSON.parse(refused.body)).toEqual({ error: 'rate_limited', requestId: one(refused, 'x-request-id') });
      expect(Number(one(refused, 'retry-after'))).toBeGreaterThanOrEqual(1);
      expect(res.filter((r) => r.seen !== undefined)).toHaveLength(5);
      const m = await (await gh.admin('/metrics')).text();
      expect(metric(m, 'gatehouse_ratelimit_rejected_total', { listener: 'web', route: 'rl-ip' })).toBe(1);
      expect(metric(m, 'gatehouse_http_requests_total', { listener: 'web', route: 'rl-ip', code: '429' })).toBe(1);
      expect(metric(m, 'gatehouse_http_requests_total', { listener: 'web', route: 'rl-ip', code: '200' })).toBe(5);
    });

    test('key header:X-Api-Key keeps two keys independent', async () => {
      const statuses = async (key: string) => {
        const out: number[] = [];
        for (let i = 0; i < 3; i++) out.push((await send(web, { path: '/rl-key', headers: [['x-api-key', key]] })).status);
        return out;
      };
      expect(await statuses('key-1')).toEqual([200, 200, 429]);
      expect(await statuses('key-2')).toEqual([200, 200, 429]);
      const m = await (await gh.admin('/metrics')).text();
      expect(metric(m, 'gatehouse_ratelimit_rejected_total', { listener: 'web', route: 'rl-key' })).toBe(2);
    });

    test('key ip is the client address: X-Forwarded-For counts from a trusted proxy only', async () => {
      // Untrusted peer: a made-up X-Forwarded-For does not give the client a new bucket.
      expect((await send(web, { path: '/rl-spoof' })).status).toBe(200);
      expect((await send(web, { path: '/rl-spoof', headers: [['X-Forwarded-For', '198.51.100.1']] })).status).toBe(429);
      // Behind a trusted proxy, each client behind it has its own.
      const trusted = gh.port('trusted');
      const via = (client: string) => send(trusted, { path: '/rl', headers: [['X-Forwarded-For', client]] });
      expect((await via('203.0.113.1')).status).toBe(200);
      expect((await via('203.0.113.1')).status).toBe(429);
      expect((await via('203.0.113.2')).status).toBe(200);
    });

    test('exact across shards: over new connections spread on both shards, exactly the burst is admitted', async () => {
      const N = 40;
      const res = await Promise.all(Array.from({ length: N }, () => send(web, { path: '/rl-exact' })));
      const ok = res.filter((r) => r.status === 200).length;
      expect(ok).toBe(10);
      expect(res.filter((r) => r.status === 429).length).toBe(N - 10);
      // Each shard makes its request ids with its own random prefix: both shards answered.
      const prefixes = new Set(res.map((r) => one(r, 'x-request-id')!.split('-')[0]));
      expect(prefixes.size).toBe(2);
      const m = await (await gh.admin('/metrics')).text();
      expect(metric(m, 'gatehouse_ratelimit_rejected_total', { listener: 'web', route: 'rl-exact' })).toBe(N - 10);
    });
  });

  describe('split and sticky', () => {
    test('split 90/10 over 2000 requests lands within 5 sigma of the weights', async () => {
      const res = await many(web, 2000, 8, () => ({ path: '/split' }));
      const toB = res.filter((r) => r.seen.backend === 'b').length;
      expect(res.filter((r) => r.seen.backend === 'a').length + toB).toBe(2000);
      // Binomial(2000, 0.1): mean 200, sigma 13.4.
      expect(toB).toBeGreaterThanOrEqual(200 - 67);
      expect(toB).toBeLessThanOrEqual(200 + 67);
    });

    test('sticky by header: each value stays on one upstream across 200 requests, and values spread by weight', async () => {
      const res = await many(web, 200, 4, (i) => ({ path: '/sticky-h', headers: [['X-User', `user-${i % 20}`]] }));
      const by = new Map<string, Set<string>>();
      res.forEach((r, i) => {
        const k = `user-${i % 20}`;
        by.set(k, (by.get(k) ?? new Set()).add(r.seen.backend));
      });
      for (const [k, s] of by) expect(s.size, k).toBe(1);
      // 600 distinct values, one request each: the share on b follows its weight (10%).
      const spread = await many(web, 600, 8, (i) => ({ path: '/sticky-h', headers: [['x-user', `spread-${i}`]] }));
      const toB = spread.filter((r) => r.seen.backend === 'b').length;
      // Binomial(600, 0.1): mean 60, sigma 7.3.
      expect(toB).toBeGreaterThanOrEqual(60 - 37);
      expect(toB).toBeLessThanOrEqual(60 + 37);
    });

    test('sticky by cookie: each session stays on one upstream; sessions reach both', async () => {
      const res = await many(web, 300, 4, (i) => ({ path: '/sticky-c', headers: [['Cookie', `theme=dark; session=s-${i % 100}; lang=en`]] }));
      const by = new Map<string, Set<string>>();
      res.forEach((r, i) => {
        const k = `s-${i % 100}`;
        by.set(k, (by.get(k) ?? new Set()).add(r.seen.backend));
      });
      for (const [k, s] of by) expect(s.size, k).toBe(1);
      const sessionsOnB = [...by.values()].filter((s) => s.has('b')).length;
      expect(sessionsOnB).toBeGreaterThan(0);
      expect(sessionsOnB).toBeLessThan(40);
      // The backend gets the Cookie as sent.
      expect(got(res[0]!.seen, 'cookie')).toEqual(['theme=dark; session=s-0; lang=en']);
    });
  });
});
