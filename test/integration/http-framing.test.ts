/**
 * How the HTTP listener frames messages on both sides, end to end: a real daemon (child process)
 * between raw `node:net` clients and a raw `node:net` backend, so that every byte is the test's
 * to choose and to check. Pipelining, chunked request bodies re-encoded upstream with their
 * trailers, chunked, close-delimited and 1xx responses, HEAD / 204 / 304 answers (never a body
 * byte), HTTP/1.0 clients of responses of unknown length, and responses split into many TCP
 * writes. The gateway's own answers and connection limits: http-wire.test.ts.
 */
import net from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { type BackendRequest, RawBackend, RawClient, echo, parseResponses } from '../helpers/http-raw.ts';
import { Daemon, tempDir } from '../helpers/daemon.ts';


/** Writes `text` to the backend socket in pieces of `size` bytes, each in its own turn (its own TCP segment). */
async function dribble(s: net.Socket, text: string, size = 1): Promise<void> {
  for (let i = 0; i < text.length && !s.destroyed; i += size) {
    s.write(Buffer.from(text.slice(i, i + size), 'latin1'));
    await new Promise<void>((r) => setImmediate(r));
  }
}

const GET = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: gw.test\r\n${extra}\r\n`;
const BIG = 'x'.repeat(300 * 1024);

/** The backend's answers, by path. */
function answer(req: BackendRequest): void {
  const s = req.socket;
  const path = req.target.split('?')[0]!;
  switch (path) {
    case '/big': // a large body: many TCP writes, backpressure on the way
      s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${BIG.length}\r\n\r\n${BIG}`);
      return;
    case '/late': // answered after the backend's own delay
      setTimeout(() => s.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate'), 30);
      return;
    case '/empty':
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
      return;
    case '/chunked': // chunked, with trailers, one byte per TCP write
      void dribble(s, 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n');
      return;
    case '/chunked-plain':
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n');
      return;
    case '/split': // a Content-Length response, one byte per TCP write
      void dribble(s, 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-split: yes\r\ncontent-length: 11\r\n\r\nhello split');
      return;
    case '/eof': // close-delimited: no Content-Length, no chunked; the body ends at the FIN
      s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the ');
      setImmediate(() => s.end('end'));
      return;
    case '/eof10': // an HTTP/1.0 backend, close-delimited
      s.end('HTTP/1.0 200 OK\r\n\r\nold backend');
      return;
    case '/head': // a HEAD answer: the length of the body a GET would get, no body
      s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1234\r\n\r\n');
      return;
    case '/head-chunked':
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n');
      return;
    case '/204':
      s.write('HTTP/1.1 204 No Content\r\nx-kind: 204\r\n\r\n');
      return;
    case '/204-body': // a backend breaking the rules: bytes after a 204 are no body
      s.write('HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello');
      return;
    case '/head-body': // the same after a HEAD answer
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello');
      return;
    case '/close-cl': // a Content-Length response that closes the upstream connection
      s.end('HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok');
      return;
    case '/204cl':
      s.write('HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n');
      return;
    case '/304':
      s.write('HTTP/1.1 304 Not Modified\r\netag: "v1"\r\n\r\n');
      return;
    case '/304cl': // the length of the representation, not of a body
      s.write('HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 1234\r\n\r\n');
      return;
    case '/hints': // 103 Early Hints, then the response, in separate writes
      s.write('HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n');
      setImmediate(() => s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhints'));
      return;
    default:
      echo(req);
  }
}

const config = (backendPort: number): string => `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 5s }
log: { level: info }
upstreams:
  - name: app
    healthCheck: { enabled: false }
    backends: [ "127.0.0.1:${backendPort}" ]
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    routes:
      - { name: all, upstream: app }
`;

let backend: RawBackend;
let gh: Daemon;
let dir: ReturnType<typeof tempDir>;

beforeAll(async () => {
  backend = await new RawBackend().start();
  dir = tempDir();
  gh = await Daemon.start(dir.write('gh.yaml', config(backend.port)));
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
  backend.handler = answer;
});

describe('pipelining', () => {
  test('requests sent in one write are answered in order, whatever the size and delay of each answer', async () => {
    const first = backend.requests.length;
    await using c = await RawClient.open(gh.port('web'));
    const paths = ['/late', '/big', '/empty', '/chunked-plain', '/late?2', '/split'];
    c.send(paths.map((p) => GET(p)).join(''));
    const list = await c.read(paths.length, [], 10_000);
    expect(list.map((r) => [r.status, r.body.length <= 20 ? r.body : r.body.length])).toEqual([
      [200, 'late'],
      [200, BIG.length],
      [200, ''],
      [200, 'abcdef'],
      [200, 'late'],
      [200, 'hello split'],
    ]);
    expect(list[1]!.body).toBe(BIG);
    expect(parseResponses(c.data, [], false).rest).toBe('');
    // Sent upstream one at a time, in order, each after the previous answer.
    expect(backend.requests.slice(first).map((r) => r.target)).toEqual(paths);
  });

  test('a pipelined request behind a POST body (Content-Length or chunked) is read after that body', async () => {
    const first = backend.requests.length;
    await using c = await RawClient.open(gh.port('web'));
    c.send(
      // A body that looks like a request line: it is body all the same.
      'POST /post-cl HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n\r\nGET /x HTTP/1.1' +
        GET('/after-cl') +
        'POST /post-chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGET \r\n0\r\n\r\n' +
        GET('/after-chunked'),
    );
    const list = await c.read(4);
    expect(list.map((r) => r.body)).toEqual(['POST /post-cl', 'GET /after-cl', 'POST /post-chunked', 'GET /after-chunked']);
    const seen = backend.requests.slice(first);
    expect(seen.map((r) => [r.method, r.target, r.body])).toEqual([
      ['POST', '/post-cl', 'GET /x HTTP/1.1'],
      ['GET', '/after-cl', ''],
      ['POST', '/post-chunked', 'GET '],
      ['GET', '/after-chunked', ''],
    ]);
  });
});

describe('request bodies', () => {
  test('a chunked body is streamed upstream re-chunked as it arrives, extensions dropped, trailers passed on', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send('POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
    // What the (maybe reused) upstream connection received from this request on.
    const upstream = (): string => {
      const raw = backend.conns.find((k) => k.raw.includes('POST /upload '))?.raw ?? '';
      return raw.slice(raw.indexOf('POST /upload '));
    };
    await backend.changes.wait(() => upstream().includes('\r\n\r\n'), 'request head forwarded before the body');
    expect(upstream()).toMatch(/^POST \/upload HTTP\/1\.1\r\n/);
    expect(upstream()).toContain('\r\ntransfer-encoding: chunked\r\n');
    // Each chunk goes upstream before the next one is sent: the body streams, it is not buffered.
    const chunks: [string, string][] = [
      ['3;name=value\r\nabc\r\n', '3\r\nabc\r\n'],
      ['10\r\n0123456789abcdef\r\n', '10\r\n0123456789abcdef\r\n'],
      ['1\r\n\n\r\n', '1\r\n\n\r\n'],
    ];
    for (const [sent, forwarded] of chunks) {
      c.send(sent);
      await backend.changes.wait(() => upstream().endsWith(forwarded), `chunk ${JSON.stringify(sent)} forwarded`);
    }
    c.send('0\r\nX-Checksum: 42\r\nX-Other: a b\r\n\r\n');
    const [r] = await c.read(1);
    expect(r!.body).toBe('POST /upload');
    const got = backend.requests.find((q) => q.target === '/upload')!;
    expect(got.body).toBe('abc0123456789abcdef\n');
    expect(got.trailers).toEqual([
      ['x-checksum', '42'],
      ['x-other', 'a b'],
    ]);
    expect(got.headers.filter(([k]) => k === 'content-length' || k === 'transfer-encoding')).toEqual([['transfer-encoding', 'chunked']]);
  });

  test('a chunked body sent with its head in one write goes upstream intact', async () => {
    await using c = await RawClient.open(gh.port('web'));
    const body = 'y'.repeat(5000);
    c.send(`POST /one-write HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${(2000).toString(16)}\r\n${body.slice(0, 2000)}\r\n${(3000).toString(16)}\r\n${body.slice(2000)}\r\n0\r\nX-T: 1\r\n\r\n`);
    const [r] = await c.read(1);
    expect(r!.body).toBe('POST /one-write');
    const got = backend.requests.find((q) => q.target === '/one-write')!;
    expect(got.body).toBe(body);
    expect(got.trailers).toEqual([['x-t', '1']]);
  });
});

describe('responses', () => {
  test('chunked with trailers to an HTTP/1.1 client, one byte per backend write: re-chunked, trailers kept', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/chunked'));
    const [r] = await c.read(1);
    expect(r!.status).toBe(200);
    expect(r!.headers['transfer-encoding']).toBe('chunked');
    expect(r!.headers['content-length']).toBeUndefined();
    expect(r!.body).toBe('hello world');
    expect(r!.trailers).toEqual({ 'x-checksum': 'abc123' });
    // The connection is kept: the next request on it is answered.
    c.send(GET('/split'));
    const [, r2] = await c.read(2);
    expect([r2!.status, r2!.headers['x-split'], r2!.body]).toEqual([200, 'yes', 'hello split']);
    expect(r2!.headers['content-length']).toBe('11');
  });

  test('HEAD, 204 and 304, with and without Content-Length: no body byte ever follows', async () => {
    await using c = await RawClient.open(gh.port('web'));
    const reqs: [string, string][] = [
      ['HEAD', '/head'],
      ['HEAD', '/head-chunked'],
      ['GET', '/204'],
      ['GET', '/204cl'],
      ['GET', '/304'],
      ['GET', '/304cl'],
      ['GET', '/204-body'],
      ['HEAD', '/head-body'],
      ['GET', '/tail'],
    ];
    c.send(reqs.map(([m, p]) => `${m} ${p} HTTP/1.1\r\nHost: a\r\n\r\n`).join(''));
    const methods = reqs.map(([m]) => m);
    const list = await c.read(reqs.length, methods);
    expect(list.map((r) => r.status)).toEqual([200, 200, 204, 204, 304, 304, 204, 200, 200]);
    // The last response's body starts right after the HEAD answer's head: nothing came in
    // between, not even the bytes a backend wrongly sent after a 204 or a HEAD answer.
    expect(list[8]!.body).toBe('GET /tail');
    expect(list.slice(0, 8).map((r) => r.body)).toEqual(['', '', '', '', '', '', '', '']);
    expect(c.data).not.toContain('hello');
    expect(parseResponses(c.data, methods, false).rest).toBe('');
    // A HEAD answer's Content-Length passes through; so does a 304's.
    expect(list[0]!.headers['content-length']).toBe('1234');
    expect(list[5]!.headers['content-length']).toBe('1234');
    expect(list[5]!.headers.etag).toBe('"v1"');
    // A 204 never carries a body length.
    expect(list[2]!.headers['content-length']).toBeUndefined();
    expect(list[2]!.headers['x-kind']).toBe('204');
    expect(list[3]!.headers['content-length']).toBeUndefined();
    expect(list.every((r) => r.headers['transfer-encoding'] === undefined)).toBe(true);
  });

  test('1xx: 103 Early Hints reaches an HTTP/1.1 client before the response, not an HTTP/1.0 one', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/hints'));
    const [hints, r] = await c.read(2);
    expect(hints!.status).toBe(103);
    expect(hints!.headers.link).toBe('</style.css>; rel=preload');
    expect([r!.status, r!.body]).toEqual([200, 'hints']);
    await using c10 = await RawClient.open(gh.port('web'));
    c10.send('GET /hints HTTP/1.0\r\n\r\n');
    await c10.ends();
    const list = c10.responses();
    expect(list.map((x) => [x.status, x.body])).toEqual([[200, 'hints']]);
  });

  test('close-delimited from the backend: chunked to an HTTP/1.1 client, which is kept; the upstream socket is not reused', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send(GET('/eof'));
    const [r] = await c.read(1);
    expect(r!.status).toBe(200);
    expect(r!.headers['transfer-encoding']).toBe('chunked');
    expect(r!.body).toBe('until the end');
    expect(r!.headers.connection).toBeUndefined();
    const upstream = backend.requests.find((q) => q.target === '/eof')!.conn;
    c.send(GET('/eof10'));
    const [, r2] = await c.read(2);
    expect([r2!.status, r2!.headers['transfer-encoding'], r2!.body]).toEqual([200, 'chunked', 'old backend']);
    // Connection: close from the backend is its own hop's: the client connection is kept.
    c.send(GET('/close-cl'));
    const [, , r3] = await c.read(3);
    expect([r3!.status, r3!.body, r3!.headers.connection]).toEqual([200, 'ok', undefined]);
    c.send(GET('/next'));
    const [, , , r4] = await c.read(4);
    expect(r4!.body).toBe('GET /next');
    const conns = ['/eof10', '/close-cl', '/next'].map((t) => backend.requests.find((q) => q.target === t)!.conn);
    expect(new Set([upstream, ...conns]).size).toBe(4);
  });

  test('HTTP/1.0 client: a response of unknown length (chunked or close-delimited) is sent close-delimited', async () => {
    for (const path of ['/chunked', '/eof']) {
      await using c = await RawClient.open(gh.port('web'));
      c.send(`GET ${path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`);
      await c.ends();
      expect(c.error).toBeUndefined();
      const [r, ...more] = c.responses();
      expect(more).toEqual([]);
      expect(r!.head.startsWith('HTTP/1.1 200 ')).toBe(true);
      expect(r!.headers['transfer-encoding']).toBeUndefined();
      expect(r!.headers['content-length']).toBeUndefined();
      // Kept alive it cannot be: the end of the body is the close.
      expect(r!.headers.connection).toBe('close');
      expect(r!.body).toBe(path === '/chunked' ? 'hello world' : 'until the end');
    }
  });

  test('a Content-Length response to an HTTP/1.0 keep-alive client keeps the connection', async () => {
    await using c = await RawClient.open(gh.port('web'));
    c.send('GET /split HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const [r] = await c.read(1);
    expect([r!.body, r!.headers['content-length'], r!.headers.connection]).toEqual(['hello split', '11', 'keep-alive']);
    c.send('GET /empty HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const [, r2] = await c.read(2);
    expect([r2!.status, r2!.headers['content-length'], r2!.headers.connection]).toEqual([200, '0', 'keep-alive']);
  });
});
