/**
 * What the HTTP wire and framing tests share: a raw `node:net` backend that records every
 * request it gets, a raw client that sends exact bytes and parses the answers, and the waiting
 * on changes with a deadline (no sleeps).
 */
import net from 'node:net';
import { once } from 'node:events';


/** Wakes the waiters of a changing value; `wait` resolves when `pred` holds, with a deadline. */
export class Changes {
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
export interface BackendRequest {
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
export function parseRequest(buf: string): { req: Omit<BackendRequest, 'conn' | 'socket'>; used: number } | undefined {
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
export function echo(req: BackendRequest): void {
  const body = `${req.method} ${req.target}`;
  req.socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
}

/**
 * A raw HTTP/1.1 backend on 127.0.0.1:0: it counts connections and bytes, keeps every request it
 * read and what each connection received, and answers each request with `handler` (default
 * {@link echo}).
 */
export class RawBackend {
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
export interface Res {
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
export function parseResponses(data: string, methods: readonly string[], eof: boolean): { list: Res[]; rest: string } {
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
export class RawClient {
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
