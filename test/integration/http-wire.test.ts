/**
 * The HTTP listener on the wire, end to end: a real daemon (child process) in front of a raw
 * `node:net` backend that records every byte it gets, and raw `node:net` clients that send exact
 * bytes. Covers the answers the gateway makes itself (the smuggling forms never reach the
 * backend), `Expect: 100-continue`, HTTP/1.0 clients, keep-alive and its limits, and what
 * `/actors` shows of a request in flight. Framing of bodies and responses: http-framing.test.ts.
 */
import { refusedPort } from '../helpers/ports.ts';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { type BackendRequest, RawBackend, type Res, RawClient, echo, parseResponses } from '../helpers/http-raw.ts';
import { Daemon, metric, tempDir } from '../helpers/daemon.ts';
import { findNodes, type ActorNode } from '../helpers/upstreams.ts';


/** Checks a gateway-made answer: status, JSON body `{error, requestId}` and `x-request-id`. */
function expectGatewayAnswer(r: Res, status: number, error: string): void {
  expect(r.status, r.head).toBe(status);
  expect(r.headers['content-type']).toBe('application/json');
  const id = r.headers['x-request-id'];
  expect(id).toMatch(/^[!-~]{1,128}$/);
  expect(JSON.parse(r.body)).toEqual({ error, requestId: id });
  expect(Number(r.headers['content-length'])).toBe(Buffer.byteLength(r.body));
}

const GET = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: gw.test\r\n${extra}\r\n`;

// ---- the daemon ------------------------------------------------------------------------------

const config = (backendPort: number, deadPort: number): string => `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 5s }
log: { level: info }
upstreams:
  - name: app
    healthCheck: { enabled: false }
    backends: [ "127.0.0.1:${backendPort}" ]
  - name: dead
    healthCheck: { enabled: false }
    circuitBreaker: { enabled: false }
    connectRetries: 0
    backends: [ "127.0.0.1:${deadPort}" ]
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    maxBodySize: 1KiB
    routes:
      - { name: api, match: { host: api.test, pathPrefix: /api }, upstream: app }
      - { name: read, match: { pathPrefix: /read, methods: [GET, HEAD] }, upstream: app }
      - { name: main, match: { pathPrefix: /app }, upstream: app }
      - { name: dead, match: { pathPrefix: /dead }, upstream: dead }
  - name: strict
    protocol: http
    listen: "127.0.0.1:0"
    headersTimeout: 400ms
    keepAliveTimeout: 400ms
    maxRequestsPerConnection: 3
    routes:
      - { name: all, match: { pathPrefix: /app }, upstream: app }
`;

let backend: RawBackend;
let gh: Daemon;
let dir: ReturnType<typeof tempDir>;

beforeAll(async () => {
  backend = await new RawBackend().start();
  // A port nothing listens on (a backend that refuses connections).
  const deadPort = await refusedPort();
  dir = tempDir();
  gh = await Daemon.start(dir.write('gh.yaml', config(backend.port, deadPort)));
});

afterAll(async () => {
  // Every client of every test is gone: the daemon must be idle (its dispose checks it).
  try {
    await gh?.[Symbol.asyncDispose]();
  } finally {
    await backend?.close();
    dir?.[Symbol.dispose]();
  }
  // No connection ended as a fault of its handler (an error line) in the whole file.
  expect(gh.logs.filter((l) => l.level >= 50)).toEqual([]);
});

beforeEach(() => {
  backend.handler = echo;
});

/** Number of `http-connection` actors alive in the daemon. */
async function httpConnections(): Promise<number> {
  return metric(await (await gh.admin('/metrics')).text(), 'gatehouse_actors', { type: 'http-connection' }) ?? 0;
}

describe('answers the gateway makes itself', () => {
  // Each is refused by the codec, answered 400 with connection: close, and never forwarded.
  const SMUGGLING: [string, string][] = [
    ['Content-Length with Transfer-Encoding', 'POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['Transfer-Encoding with Content-Length', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n'],
    ['two different Content-Length', 'POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde'],
    ['two equal Content-Length', 'POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc'],
    ['a Content-Length list', 'POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc'],
    ['a signed Content-Length', 'POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc'],
    ['Transfer-Encoding not ending in chunked', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n'],
    ['Transfer-Encoding xchunked', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n'],
    ['chunked twice', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['Transfer-Encoding in HTTP/1.0', 'POST /app HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['chunk size 0x5', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n'],
    ['chunk size -1', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n'],
    ['a space after the chunk size', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n'],
    ['chunk data not followed by CRLF', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n'],
    ['a bad chunk after a good one', 'POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n'],
    ['obs-fold', 'GET /app HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n'],
    ['a bare CR in a value', 'GET /app HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n'],
    ['bare LF line ends', 'GET /app HTTP/1.1\nHost: a\n\n'],
    ['a bare LF between fields', 'GET /app HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n'],
    ['NUL in a value', 'GET /app HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n'],
    ['a space before the colon', 'GET /app HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n'],
    ['HTTP/1.1 without Host', 'GET /app HTTP/1.1\r\nX-A: 1\r\n\r\n'],
    ['two Host fields', 'GET /app HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
    ['a Host with @', 'GET /app HTTP/1.1\r\nHost: evil@a\r\n\r\n'],
    ['a double space in the request line', 'GET  /app HTTP/1.1\r\nHost: a\r\n\r\n'],
  ];

  test('every smuggling form gets 400 bad_request, connection: close, and not one byte reaches the backend', async () => {
    // Refused at the head: no route yet (""); refused in a body read ahead: its route (main).
    const count400 = async (): Promise<number> => {
      const m = await (await gh.admin('/metrics')).text();
      return ['', 'main'].reduce((n, route) => n + (metric(m, 'gatehouse_http_requests_total', { listener: 'web', route, code: '400' }) ?? 0), 0);
    };
    const before = await count400();
    // Warm the pool first: with an idle upstream socket at hand, a request forwarded too early
    // would go out at once, so the check below would see its bytes.
    {
      await using c = await RawClient.open(gh.port('web'));
      c.send(GET('/app/warm'));
      expect((await c.read(1))[0]!.status).toBe(200);
    }
    const accepted = backend.accepted;
    const bytes = backend.bytes;
    for (const [what, req] of SMUGGLING) {
      await using c = await RawClient.open(gh.port('web'));
      // Sent with a valid request behind it: nothing after a refused request is read either.
      c.send(req + GET('/app/after'));
      await c.ends();
      const [r, ...more] = c.responses();
      expect(r, `${what}: ${JSON.stringify(c.data)}`).toBeDefined();
      expectGatewayAnswer(r!, 400, 'bad_request');
      expect(r!.headers.connection, what).toBe('close');
      expect(more, what).toEqual([]);
      expect(c.error, `${what}: closed with a FIN, not a reset`).toBeUndefined();
      expect({ what, accepted: backend.accepted, bytes: backend.bytes }).toEqual({ what, accepted, bytes });
    }
    // A valid request on a fresh connection still reaches the backend (the fence of the check above).
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/app/fence'));
    expect((await c.read(1))[0]!.body).toBe('GET /app/fence');
    expect(backend.requests.map((r) => r.target).filter((t) => t !== '/app/warm')).toEqual(['/app/fence']);
    expect(await count400()).toBe(before + SMUGGLING.length);
  });

  test('404 no_route, 405 with Allow, a HEAD answer without body; the connection stays usable', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/nowhere', 'X-Request-Id: my-id-1\r\n'));
    const [nf] = await c.read(1);
    expectGatewayAnswer(nf!, 404, 'no_route');
    expect(nf!.headers['x-request-id']).toBe('my-id-1');
    expect(nf!.headers.connection).toBeUndefined();
    c.send('DELETE /read/x HTTP/1.1\r\nHost: a\r\n\r\n');
    const [, na] = await c.read(2);
    expectGatewayAnswer(na!, 405, 'method_not_allowed');
    expect(na!.headers.allow).toBe('GET, HEAD');
    c.send('HEAD /nowhere HTTP/1.1\r\nHost: a\r\n\r\n');
    const [, , head] = await c.read(3, ['GET', 'DELETE', 'HEAD']);
    expect(head!.status).toBe(404);
    expect(Number(head!.headers['content-length'])).toBeGreaterThan(0);
    c.send(GET('/app/next'));
    const list = await c.read(4, ['GET', 'DELETE', 'HEAD', 'GET']);
    // No body bytes after the HEAD answer: the next response starts right after its head.
    expect(list[3]!.status).toBe(200);
    expect(list[3]!.body).toBe('GET /app/next');
    expect(parseResponses(c.data, ['GET', 'DELETE', 'HEAD', 'GET'], false).rest).toBe('');
  });

  test('502 made after the head was handled (connect refused): the connection stays usable', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/dead/x'));
    const [r] = await c.read(1);
    expectGatewayAnswer(r!, 502, 'bad_gateway');
    expect(r!.headers.connection).toBeUndefined();
    c.send('HEAD /dead/y HTTP/1.1\r\nHost: a\r\n\r\n' + GET('/app/alive'));
    const list = await c.read(3, ['GET', 'HEAD', 'GET']);
    expect(list[1]!.status).toBe(502);
    expect([list[2]!.status, list[2]!.body]).toEqual([200, 'GET /app/alive']);
    expect(parseResponses(c.data, ['GET', 'HEAD', 'GET'], false).rest).toBe('');
  });

  test('413 for a Content-Length or a chunked body over maxBodySize, 414, 431, 501, 505: never forwarded', async () => {
    const accepted = backend.accepted;
    const bytes = backend.bytes;
    const cases: [string, number, string][] = [
      [`POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n${'a'.repeat(1025)}`, 413, 'body_too_large'],
      [`POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${'a'.repeat(1024)}\r\n1\r\nb\r\n0\r\n\r\n`, 413, 'body_too_large'],
      [`POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n${'a'.repeat(100)}`, 413, 'body_too_large'],
      [GET(`/app/${'u'.repeat(9000)}`), 414, 'uri_too_long'],
      [GET('/app', `X-Big: ${'b'.repeat(17 * 1024)}\r\n`), 431, 'headers_too_large'],
      ['POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 501, 'not_implemented'],
      ['BREW /app HTTP/1.1\r\nHost: a\r\n\r\n', 501, 'not_implemented'],
      ['GET /app HTTP/2.0\r\nHost: a\r\n\r\n', 505, 'http_version_not_supported'],
      ['GET /app HTTP/1.2\r\nHost: a\r\n\r\n', 505, 'http_version_not_supported'],
    ];
    for (const [req, status, error] of cases) {
      await using c = await RawClient.open(gh.port('web'));
      c.send(req);
      const [r] = await c.read(1);
      expectGatewayAnswer(r!, status, error);
      expect(r!.headers.connection).toBe('close');
      await c.ends();
      expect({ status, accepted: backend.accepted, bytes: backend.bytes }).toEqual({ status, accepted, bytes });
    }
  });

  test('a POST refused before its body was read is answered, closed, and its late body is dropped', async () => {
    // Part of the body with the head, or none of it: either way the rest comes after the answer.
    for (const first of ['abc', '']) {
      await using c = await RawClient.open(gh.port('web'));
      c.send(`POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n${first}`);
      const [r] = await c.read(1);
      expectGatewayAnswer(r!, 404, 'no_route');
      expect(r!.headers.connection).toBe('close');
      // The close lingers: the connection waits, reading, for the rest of the body and the
      // client's FIN. Closed at once, the late body would meet a reset, which can destroy an
      // answer the client has not read yet (an upload still being written).
      const peer = `127.0.0.1:${c.socket.localPort}`;
      const mine = async () => findNodes(await gh.json<ActorNode>('/actors?type=http-connection'), (n) => n.type === 'http-connection' && n.peer === peer);
      expect((await mine()).map((n) => n.node.state)).toEqual(['closing']);
      c.send('defghijklm'.slice(first.length));
      c.socket.end();
      await c.changes.wait(() => c.closed, 'the connection closed', 5_000);
      expect(c.error).toBeUndefined();
      // Gone once the gateway read the client's FIN (which may follow the client's 'close').
      const deadline = Date.now() + 3_000;
      let left = await mine();
      while (left.length > 0 && Date.now() < deadline) left = await mine();
      expect(left).toEqual([]);
      expect(c.responses()).toHaveLength(1);
    }
    // The connections ended cleanly, not as a fault of their handler.
    expect(gh.logs.filter((l) => l.msg === 'http connection handler failed: connection closed')).toEqual([]);
  });

  test('a framing error mid-chunked-body, after the head was forwarded, resets both sides', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send('POST /app/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
    // The head and the first chunk reached the backend (re-chunked): the request streams.
    await backend.changes.wait(() => backend.conns.some((k) => k.raw.includes('POST /app/upload') && k.raw.includes('5\r\nhello\r\n')), 'head and first chunk forwarded');
    const upstream = backend.conns.find((k) => k.raw.includes('POST /app/upload'))!;
    c.send('zz\r\nworld\r\n0\r\n\r\n');
    await c.ends();
    expect(c.data).toBe('');
    expect(c.error?.code).toBe('ECONNRESET');
    await backend.changes.wait(() => upstream.closed, 'upstream connection closed');
    expect(upstream.raw).not.toContain('world');
    expect(backend.requests.some((r) => r.target === '/app/upload')).toBe(false);
    // Nothing is left counted for the cut request (the backend's active count, the connection).
    expect(await gh.idleLeftovers()).toEqual([]);
    expect(await httpConnections()).toBe(0);
  });
});

describe('Expect: 100-continue', () => {
  test('the gateway sends 100 Continue before the body; the backend gets the body and no Expect', async () => {
    // A backend that sends its own 100 anyway: the client still gets one.
    backend.handler = (req) => {
      req.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
      echo(req);
    };
    await using c = await RawClient.open(gh.port('web'));
    c.send('POST /app/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n');
    await c.changes.wait(() => c.data.length > 0, '100 Continue');
    expect(c.data).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    c.send('hello world');
    const [cont, r, ...more] = await c.read(2, ['POST']);
    expect(cont!.status).toBe(100);
    expect(r!.status).toBe(200);
    expect(more).toEqual([]);
    const got = backend.requests.find((q) => q.target === '/app/upload')!;
    expect(got.body).toBe('hello world');
    expect(got.headers.map(([k]) => k)).not.toContain('expect');
    expect(got.headers).toContainEqual(['content-length', '11']);
  });

  test('a request refused before it has an upstream gets its answer without 100', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send('POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    const [r] = await c.read(1);
    expect(c.data.startsWith('HTTP/1.1 404 ')).toBe(true);
    expectGatewayAnswer(r!, 404, 'no_route');
    // Its body never came: the connection cannot be reused and is closed.
    expect(r!.headers.connection).toBe('close');
    await c.ends();
  });
});

describe('HTTP/1.0 clients', () => {
  test('without Host only routes without host match; the backend gets a Host', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send('GET /app/old HTTP/1.0\r\n\r\n');
    const [r] = await c.read(1);
    expect(r!.status).toBe(200);
    expect(r!.body).toBe('GET /app/old');
    // Not kept alive without Connection: keep-alive.
    expect(r!.headers.connection).toBe('close');
    await c.ends();
    const got = backend.requests.find((q) => q.target === '/app/old')!;
    expect(got.raw.startsWith('GET /app/old HTTP/1.1\r\n')).toBe(true);
    expect(got.headers).toContainEqual(['host', `127.0.0.1:${backend.port}`]);

    // /api is only routed for Host api.test: a 1.0 request without Host gets 404.
    await using c2 = await RawClient.open(gh.port('web'));
    c2.send('GET /api/x HTTP/1.0\r\n\r\n');
    expectGatewayAnswer((await c2.read(1))[0]!, 404, 'no_route');
    await c2.ends();
    await using c3 = await RawClient.open(gh.port('web'));
    c3.send(`GET /api/x HTTP/1.1\r\nHost: api.test\r\n\r\n`);
    expect((await c3.read(1))[0]!.body).toBe('GET /api/x');
  });

  test('kept alive only with Connection: keep-alive, and the answer says so', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send('GET /app/ka1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const [r1] = await c.read(1);
    expect(r1!.status).toBe(200);
    expect(r1!.headers.connection).toBe('keep-alive');
    c.send('GET /app/ka2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const [, r2] = await c.read(2);
    expect(r2!.body).toBe('GET /app/ka2');
    expect(r2!.headers.connection).toBe('keep-alive');
    // A gateway answer keeps it alive too.
    c.send('GET /nowhere HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const [, , r3] = await c.read(3);
    expect(r3!.status).toBe(404);
    expect(r3!.headers.connection).toBe('keep-alive');
    c.send('GET /app/ka3 HTTP/1.0\r\n\r\n');
    const [, , , r4] = await c.read(4);
    expect(r4!.headers.connection).toBe('close');
    await c.ends();
    expect(c.error).toBeUndefined();
  });
});

describe('keep-alive and connection limits', () => {
  test('many requests on one client connection reuse one pooled upstream socket', async () => {
    await using c = await RawClient.open(gh.port('web'));
    const first = backend.requests.length;
    for (let i = 0; i < 10; i++) {
      c.send(GET(`/app/seq-${i}`));
      const list = await c.read(i + 1);
      expect(list[i]!.body).toBe(`GET /app/seq-${i}`);
      expect(list[i]!.headers.connection).toBeUndefined();
    }
    const seen = backend.requests.slice(first);
    expect(seen.map((r) => r.target)).toEqual(Array.from({ length: 10 }, (_, i) => `/app/seq-${i}`));
    expect(new Set(seen.map((r) => r.conn)).size).toBe(1);
  });

  test('Connection: close from the client: the answer says close, the gateway closes, nothing after it is read', async () => {
    await using c = await RawClient.open(gh.port('web'));
    const first = backend.requests.length;
    c.send(GET('/app/bye', 'Connection: close\r\n') + GET('/app/never'));
    const [r] = await c.read(1);
    expect(r!.headers.connection).toBe('close');
    await c.ends();
    expect(c.error).toBeUndefined();
    expect(c.responses()).toHaveLength(1);
    expect(backend.requests.slice(first).map((q) => q.target)).toEqual(['/app/bye']);
  });

  test('Connection: close with nothing after it: the gateway closes once its answer is out, without waiting for the client', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/app/last', 'Connection: close\r\n'));
    const [r] = await c.read(1);
    expect(r!.body).toBe('GET /app/last');
    await c.ends();
    // The client keeps its side open: the connection is gone from the gateway all the same
    // (a lingering close would keep it, reading, until the client's FIN or keepAliveTimeout).
    const peer = `127.0.0.1:${c.socket.localPort}`;
    const deadline = Date.now() + 3_000;
    let left: unknown[] = [];
    do {
      left = findNodes(await gh.json<ActorNode>('/actors?type=http-connection'), (n) => n.type === 'http-connection' && n.peer === peer);
    } while (left.length > 0 && Date.now() < deadline);
    expect(left).toEqual([]);
    expect(c.error).toBeUndefined();
  });

  test('maxRequestsPerConnection: the last answer says connection: close, then the gateway closes', async () => {
    await using c = await RawClient.open(gh.port('strict'));
    for (let i = 1; i <= 3; i++) {
      c.send(GET(`/app/m${i}`));
      const list = await c.read(i);
      expect(list[i - 1]!.body).toBe(`GET /app/m${i}`);
      expect(list[i - 1]!.headers.connection).toBe(i === 3 ? 'close' : undefined);
    }
    await c.ends();
    expect(c.error).toBeUndefined();
  });

  test('maxRequestsPerConnection with pipelined requests: requests past the limit are not read', async () => {
    await using c = await RawClient.open(gh.port('strict'));
    const first = backend.requests.length;
    // The third is refused by the gateway (no route): it still counts, and still closes.
    c.send(GET('/app/p1') + GET('/app/p2') + GET('/none') + GET('/app/p4') + GET('/none'));
    await c.ends();
    const list = c.responses();
    expect(list.map((r) => r.status)).toEqual([200, 200, 404]);
    expect(list.map((r) => r.headers.connection)).toEqual([undefined, undefined, 'close']);
    expect(parseResponses(c.data, [], true).rest).toBe('');
    expect(backend.requests.slice(first).map((q) => q.target)).toEqual(['/app/p1', '/app/p2']);
  });

  test('keepAliveTimeout closes an idle client connection', async () => {
    await using c = await RawClient.open(gh.port('strict'));
    c.send(GET('/app/idle'));
    await c.read(1);
    const answered = performance.now();
    await c.ends(5_000);
    const idle = performance.now() - answered;
    expect(idle).toBeGreaterThanOrEqual(300);
    expect(c.responses()).toHaveLength(1);
    expect(c.error).toBeUndefined();
  });

  test('headersTimeout closes a client that sends its head too slowly (slowloris)', async () => {
    const bytes = backend.bytes;
    await using c = await RawClient.open(gh.port('strict'));
    const started = performance.now();
    c.send('GET /app/slow HTTP/1.1\r\nHost: a\r\n');
    // One more field every 50 ms: never idle for long, but the head never ends.
    let n = 0;
    let last = started;
    let maxGap = 0;
    const drip = setInterval(() => {
      if (c.closed || c.ended) return;
      c.send(`X-Drip-${n++}: 1\r\n`);
      maxGap = Math.max(maxGap, performance.now() - last);
      last = performance.now();
    }, 50);
    try {
      await c.ends(5_000);
    } finally {
      clearInterval(drip);
    }
    const took = performance.now() - started;
    expect(took).toBeGreaterThanOrEqual(300);
    // The client was never silent for as long as the timeout: the head's deadline closed it.
    expect(n).toBeGreaterThan(3);
    expect(maxGap).toBeLessThan(350);
    expect(c.responses()).toEqual([]);
    expect(backend.bytes).toBe(bytes);
  });
});

describe('/actors', () => {
  test('an http-connection actor shows its current request while the backend holds the response', async () => {
    const held: BackendRequest[] = [];
    backend.handler = (req) => (req.target.startsWith('/app/hold') ? held.push(req) : echo(req));
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/app/hold?x=1'));
    await backend.changes.wait(() => held.length === 1, 'request held by the backend');
    const peer = `127.0.0.1:${c.socket.localPort}`;
    const tree = await gh.json<ActorNode>('/actors?type=http-connection');
    const conns = findNodes(tree, (n) => n.type === 'http-connection' && n.peer === peer);
    expect(conns).toHaveLength(1);
    const node = conns[0]!.node;
    expect(node.state).toBe('waiting_upstream');
    expect(node.request).toEqual({ method: 'GET', path: '/app/hold?x=1', route: 'main', backend: `127.0.0.1:${backend.port}` });
    expect(node.requests).toBe(1);
    echo(held[0]!);
    expect((await c.read(1))[0]!.body).toBe('GET /app/hold?x=1');
    // Between requests, no request is shown.
    const idle = findNodes(await gh.json<ActorNode>('/actors?type=http-connection'), (n) => n.type === 'http-connection' && n.peer === peer);
    expect(idle.map((n) => [n.node.state, n.node.request])).toEqual([['keepalive_idle', undefined]]);
  });
});
