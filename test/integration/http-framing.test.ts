/**
 * How the HTTP listener frames messages on both sides, end to end: a real daemon (child process)
 * between raw `node:net` clients and a raw `node:net` backend, so that every byte is the test's
 * to choose and to check. Pipelining, chunked request bodies re-encoded upstream with their
 * trailers, chunked, close-delimited and 1xx responses, HEAD / 204 / 304 answers (never a body
 * byte), HTTP/1.0 clients of responses of unknown length, and responses split into many TCP
 * writes. The gateway's own answers and connection limits: http-wire.test.ts.
 */
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { Daemon, tempDir } from '../helpers/daemon.ts';

// ---- waiting on events (no sleeps) ----------------------------------------------------------

/** Wakes the waiters of a changing value; `wait` resolves when `pred` holds, with a deadline. */
class Changes {
  readonly #waiters = new Set<() => void>();
  changed(): void {
    for (const w of this.#waiters) w();
  }
  async wait(pred: () => boolean, what: string, ms = 5_000): Promise<void> {
    if (pred()) return;
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!pred()) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${what}: not reached within ${ms} ms`));
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
    });
  }
}

// ---- a raw backend ---------------------------------------------------------------------------

/** A request as the backend read it off the wire. */
interface BackendRequest {
  /** 1-based number of the backend connection it came on. */
  conn: number;
  method: string;
  target: string;
  /** Field names in lower case, in arrival order. */
  headers: [string, string][];
  body: string;
  /** Trailer fields of a chunked body, names in lower case. */
  trailers: [string, string][];
  /** The raw bytes of the request (head and body as framed on the wire). */
  raw: string;
  socket: net.Socket;
}

/** The first complete request at the start of `buf` (latin1), or undefined. */
function parseRequest(buf: string): { req: Omit<BackendRequest, 'conn' | 'socket'>; used: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = buf.slice(0, end).split('\r\n');
  const [method = '', target = ''] = lines[0]!.split(' ');
  const headers = lines.slice(1).map((l): [string, string] => {
    const i = l.indexOf(':');
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
  });
  const get = (n: string): string | undefined => headers.find(([k]) => k === n)?.[1];
  let p = end + 4;
  let body = '';
  const trailers: [string, string][] = [];
  if (get('transfer-encoding') === 'chunked') {
    for (;;) {
      const le = buf.indexOf('\r\n', p);
      if (le < 0) return undefined;
      const size = parseInt(buf.slice(p, le), 16);
      if (size === 0) {
        const te = buf.indexOf('\r\n\r\n', le);
        if (te < 0) return undefined;
        for (const l of buf.slice(le + 2, te).split('\r\n').filter(Boolean)) {
          const i = l.indexOf(':');
          trailers.push([l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()]);
        }
        p = te + 4;
        break;
      }
      if (buf.length < le + 2 + size + 2) return undefined;
      body += buf.slice(le + 2, le + 2 + size);
      p = le + 2 + size + 2;
    }
  } else {
    const n = Number(get('content-length') ?? 0);
    if (buf.length < p + n) return undefined;
    body = buf.slice(p, p + n);
    p += n;
  }
  return { req: { method, target, headers, body, trailers, raw: buf.slice(0, p) }, used: p };
}

/** Answers 200 with `METHOD target` as the body. */
function echo(req: BackendRequest): void {
  const body = `${req.method} ${req.target}`;
  req.socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
}

/**
 * A raw HTTP/1.1 backend on 127.0.0.1:0: it counts connections and bytes, keeps every request it
 * read and what each connection received, and answers each request with `handler` (default
 * {@link echo}).
 */
class RawBackend {
  server!: net.Server;
  port = 0;
  accepted = 0;
  bytes = 0;
  readonly requests: BackendRequest[] = [];
  /** What each connection received (latin1), and whether it is closed; index = conn - 1. */
  readonly conns: { raw: string; closed: boolean }[] = [];
  readonly sockets = new Set<net.Socket>();
  readonly changes = new Changes();
  handler: (req: BackendRequest) => void = echo;

  async start(): Promise<this> {
    this.server = net.createServer({ noDelay: true }, (s) => {
      const conn = ++this.accepted;
      const rec = { raw: '', closed: false };
      this.conns.push(rec);
      this.sockets.add(s);
      let buf = '';
      s.on('error', () => {});
      s.on('close', () => {
        rec.closed = true;
        this.sockets.delete(s);
        this.changes.changed();
      });
      s.on('data', (d: Buffer) => {
        this.bytes += d.length;
        rec.raw += d.toString('latin1');
        buf += d.toString('latin1');
        for (let r = parseRequest(buf); r !== undefined; r = parseRequest(buf)) {
          buf = buf.slice(r.used);
          const req = { ...r.req, conn, socket: s };
          this.requests.push(req);
          this.handler(req);
        }
        this.changes.changed();
      });
      this.changes.changed();
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.server.close();
    await once(this.server, 'close');
  }
}

// ---- a raw client ----------------------------------------------------------------------------

/** A response as the client read it. */
interface Res {
  status: number;
  /** The head as received (status line and fields). */
  head: string;
  /** Field names in lower case. */
  headers: Record<string, string>;
  body: string;
  trailers: Record<string, string>;
}

/**
 * The responses at the start of `data` (latin1), `methods` being the request methods in order (a
 * HEAD answer has no body); 1xx responses are listed too. `eof`: the connection was closed, which
 * ends a close-delimited body. Stops at the first incomplete response; `rest` is what follows.
 */
function parseResponses(data: string, methods: readonly string[], eof: boolean): { list: Res[]; rest: string } {
  const list: Res[] = [];
  let p = 0;
  let m = 0;
  for (;;) {
    const end = data.indexOf('\r\n\r\n', p);
    if (end < 0) break;
    const lines = data.slice(p, end).split('\r\n');
    const status = Number(lines[0]!.slice(9, 12));
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).toLowerCase();
      headers[k] = headers[k] === undefined ? l.slice(i + 1).trim() : `${headers[k]}, ${l.slice(i + 1).trim()}`;
    }
    const res: Res = { status, head: data.slice(p, end + 4), headers, body: '', trailers: {} };
    let q = end + 4;
    const method = status < 200 ? '' : (methods[m] ?? 'GET');
    if (status < 200 || status === 204 || status === 304 || method === 'HEAD') {
      // no body
    } else if (headers['transfer-encoding'] === 'chunked') {
      let complete = false;
      for (;;) {
        const le = data.indexOf('\r\n', q);
        if (le < 0) break;
        const size = parseInt(data.slice(q, le), 16);
        if (size === 0) {
          const te = data.indexOf('\r\n\r\n', le);
          if (te < 0) break;
          for (const l of data.slice(le + 2, te).split('\r\n').filter(Boolean)) {
            const i = l.indexOf(':');
            res.trailers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
          }
          q = te + 4;
          complete = true;
          break;
        }
        if (data.length < le + 2 + size + 2) break;
        res.body += data.slice(le + 2, le + 2 + size);
        q = le + 2 + size + 2;
      }
      if (!complete) break;
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (data.length < q + n) break;
      res.body = data.slice(q, q + n);
      q += n;
    } else {
      if (!eof) break;
      res.body = data.slice(q);
      q = data.length;
    }
    list.push(res);
    if (status >= 200) m++;
    p = q;
  }
  return { list, rest: data.slice(p) };
}

/** A raw client connection that keeps everything it reads. */
class RawClient {
  readonly socket: net.Socket;
  data = '';
  /** The gateway ended its side (FIN). */
  ended = false;
  closed = false;
  /** The connection ended with an error (a reset). */
  error: NodeJS.ErrnoException | undefined;
  readonly changes = new Changes();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.data += d.toString('latin1');
      this.changes.changed();
    });
    socket.on('end', () => {
      this.ended = true;
      this.changes.changed();
    });
    socket.on('error', (err) => (this.error = err));
    socket.on('close', () => {
      this.closed = true;
      this.changes.changed();
    });
  }

  static async open(port: number): Promise<RawClient> {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const c = new RawClient(s);
    await once(s, 'connect');
    return c;
  }

  send(s: string | Buffer): void {
    this.socket.write(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);
  }

  responses(methods: readonly string[] = []): Res[] {
    return parseResponses(this.data, methods, this.ended || this.closed).list;
  }

  /** Waits for `n` responses (1xx included) and returns them. */
  async read(n: number, methods: readonly string[] = [], ms = 5_000): Promise<Res[]> {
    await this.changes.wait(() => this.responses(methods).length >= n || this.closed, `${n} response(s)`, ms);
    const list = this.responses(methods);
    if (list.length < n) throw new Error(`connection closed after ${list.length} response(s): ${JSON.stringify(this.data.slice(0, 500))}`);
    return list;
  }

  /** Waits until the gateway ended the connection (FIN or reset). */
  async ends(ms = 5_000): Promise<void> {
    await this.changes.wait(() => this.ended || this.closed, 'connection closed by the gateway', ms);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.closed) return;
    this.socket.destroy();
    await once(this.socket, 'close');
  }
}

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
