import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { Client, Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir } from '../helpers/daemon.ts';
import { metricsText } from '../helpers/upstreams.ts';

/**
 * The keep-alive race through the daemon: backends that close idle keep-alive sockets
 * aggressively, at random moments, while requests keep coming. A backend may close an idle
 * socket just as the gateway sends a request on it; the gateway must send such a request again
 * on a fresh connection (docs/http.md, "The keep-alive race"), so that no client ever sees it,
 * whatever the method, and without the route's `retries` (0 here).
 *
 * Two backends share the upstream:
 * - `node`: node:http with `keepAliveTimeout` 2 ms and `maxRequestsPerSocket` 5 (a
 *   `Connection: close` on the fifth response): Node's own idle close, as a real backend does it;
 * - `raw`: a raw socket server that, after each response, closes the socket when it stayed idle
 *   a random 0-3 ms; closes it right after the Nth response (N random in 1-8) without saying
 *   `Connection: close`; and, on 3% of the requests that reach a socket that already served one,
 *   resets it without reading the request, which is what the race looks like from the gateway
 *   (a request on a reused socket met by a reset before any response byte).
 *
 * Neither ever closes a connection that has not served its first request, nor one with a
 * request under way: a gateway that handles the race loses nothing, and sends every request to
 * a backend that processes it exactly once.
 */

interface Counts {
  name: string;
  port: number;
  accepted: number;
  /** Paths processed (answered), in order. */
  processed: string[];
  /** Sockets the backend closed while idle, after its Nth response, or reset with a request unread. */
  idleClosed: number;
  closedAfterN: number;
  resetUnread: number;
  [Symbol.asyncDispose](): Promise<void>;
}

const rand = (lo: number, hi: number): number => lo + Math.floor(Math.random() * (hi - lo + 1));

async function startRawBackend(): Promise<Counts> {
  const sockets = new Set<net.Socket>();
  const c = { name: 'raw', port: 0, accepted: 0, processed: [] as string[], idleClosed: 0, closedAfterN: 0, resetUnread: 0 } as Counts;
  const server = net.createServer((s) => {
    c.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf: Buffer = Buffer.alloc(0);
    let served = 0;
    let closing = false;
    const limit = rand(1, 8);
    let timer: NodeJS.Timeout | undefined;
    // Nothing is left to write when it closes (a response is a few dozen bytes): a FIN, or a
    // reset if the gateway's next request is already there unread.
    const close = (): void => {
      closing = true;
      if (s.writableLength === 0) s.destroy();
      else s.end();
    };
    s.on('data', (d: Buffer) => {
      if (closing) return; // closed: what comes now is never processed
      clearTimeout(timer);
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const head = buf.subarray(0, end).toString('latin1');
        if (/\r\ntransfer-encoding:/i.test(head)) throw new Error(`unexpected chunked request: ${head}`);
        const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) break;
        if (served > 0 && Math.random() < 0.03) {
          c.resetUnread++;
          closing = true;
          s.resetAndDestroy();
          return;
        }
        const body = buf.subarray(end + 4, end + 4 + len).toString('latin1');
        buf = buf.subarray(end + 4 + len);
        const [method, path] = head.split(' ', 2) as [string, string];
        c.processed.push(path);
        const text = `raw ${method} ${path} ${body}`;
        s.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
        if (++served >= limit) {
          c.closedAfterN++;
          return close();
        }
      }
      if (buf.length === 0) {
        timer = setTimeout(() => {
          if (closing || buf.length > 0) return;
          c.idleClosed++;
          close();
        }, rand(0, 3));
      }
    });
    s.on('close', () => clearTimeout(timer));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  c.port = (server.address() as net.AddressInfo).port;
  c[Symbol.asyncDispose] = async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  };
  return c;
}

async function startNodeBackend(): Promise<Counts> {
  const c = { name: 'node', port: 0, accepted: 0, processed: [] as string[], idleClosed: 0, closedAfterN: 0, resetUnread: 0 } as Counts;
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      c.processed.push(req.url!);
      res.setHeader('content-type', 'text/plain');
      res.end(`node ${req.method} ${req.url} ${body}`);
    });
  });
  server.keepAliveTimeout = 2;
  server.maxRequestsPerSocket = 5;
  server.on('connection', () => c.accepted++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  c.port = (server.address() as net.AddressInfo).port;
  c[Symbol.asyncDispose] = async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  };
  return c;
}

/**
 * A backend that resets each connection as the head of its second request arrives, unread: the
 * race, every time a socket is reused. Answers `conn-N LENGTH` (N: its connection number, LENGTH:
 * the body bytes it read).
 */
async function startResetOnReuse(): Promise<{ port: number; resets: number; served: { conn: number; first: boolean; path: string; length: number }[]; [Symbol.asyncDispose](): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let conns = 0;
  const b = { port: 0, resets: 0, served: [] as { conn: number; first: boolean; path: string; length: number }[] } as Awaited<ReturnType<typeof startResetOnReuse>>;
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const id = ++conns;
    let requests = 0;
    let buf = '';
    let need = -1;
    let path = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        if (need < 0) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          if (++requests === 2) {
            b.resets++;
            return void s.resetAndDestroy();
          }
          const head = buf.slice(0, end);
          path = head.split(' ', 2)[1]!;
          need = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          buf = buf.slice(end + 4);
        }
        if (buf.length < need) return;
        b.served.push({ conn: id, first: requests === 1, path, length: need });
        buf = buf.slice(need);
        const text = `conn-${id} ${need}`;
        s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${text.length}\r\n\r\n${text}`);
        need = -1;
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  b.port = (server.address() as net.AddressInfo).port;
  b[Symbol.asyncDispose] = async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  };
  return b;
}

const config = (ports: number[], big: number) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
log: { level: info }
upstreams:
  - name: ka
    balance: round_robin
    healthCheck: { enabled: false }
    backends: [ ${ports.map((p) => `"127.0.0.1:${p}"`).join(', ')} ]
  - name: big
    healthCheck: { enabled: false }
    backends: [ "127.0.0.1:${big}" ]
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    routes:
      - { name: ka, match: { pathPrefix: /ka }, upstream: ka }
      - { name: big, match: { pathPrefix: /big }, upstream: big }
`;

const TOTAL = 10_000;
const CONCURRENCY = 16;

describe('the keep-alive race through the gateway', () => {
  let raw: Counts;
  let node: Counts;
  let big: Awaited<ReturnType<typeof startResetOnReuse>>;
  let dir: ReturnType<typeof tempDir>;
  let gh: Daemon;

  beforeAll(async () => {
    raw = await startRawBackend();
    node = await startNodeBackend();
    big = await startResetOnReuse();
    dir = tempDir();
    gh = await Daemon.start(dir.write('gh.yaml', config([raw.port, node.port], big.port)));
  });

  afterAll(async () => {
    try {
      await gh?.[Symbol.asyncDispose]();
    } finally {
      for (const b of [raw, node, big]) await b?.[Symbol.asyncDispose]();
      dir?.[Symbol.dispose]();
    }
  });

  test('backends closing idle keep-alive sockets at random moments: 10,000 requests, 16 at a time, zero failures, each processed once', async () => {
    const client = new Pool(`http://127.0.0.1:${gh.port('web')}`, { connections: CONCURRENCY, pipelining: 1 });
    const failures: string[] = [];
    let next = 0;
    let ok = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < TOTAL; i = next++) {
        // One in four is a POST with a body: the race retry is for any method.
        const post = i % 4 === 0;
        const path = `/ka/${i}`;
        const sent = post ? `body-${i}` : '';
        try {
          const r = await client.request({ path, method: post ? 'POST' : 'GET', body: post ? sent : undefined });
          const text = await r.body.text();
          if (r.statusCode !== 200 || !/^(raw|node) /.test(text) || !text.endsWith(` ${post ? 'POST' : 'GET'} ${path} ${sent}`)) failures.push(`${path}: ${r.statusCode} ${text.slice(0, 200)}`);
          else ok++;
        } catch (err) {
          failures.push(`${path}: ${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message}`);
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    } finally {
      await client.close();
    }

    expect(failures.slice(0, 20)).toEqual([]);
    expect(ok).toBe(TOTAL);
    // Every request was processed by a backend exactly once: none lost, none sent twice to a
    // backend that processed it.
    const processed = [...raw.processed, ...node.processed];
    expect(processed.length).toBe(TOTAL);
    expect(new Set(processed).size).toBe(TOTAL);
    // The race did happen, many times: sockets closed under the gateway by both backends, and
    // requests met by a reset on a reused socket (each one sent again on a fresh socket).
    expect(raw.idleClosed).toBeGreaterThan(50);
    expect(raw.closedAfterN).toBeGreaterThan(50);
    expect(raw.resetUnread).toBeGreaterThan(10);
    expect(node.accepted).toBeGreaterThan(100);
    expect(raw.processed.length).toBeGreaterThan(TOTAL / 4);
    expect(node.processed.length).toBeGreaterThan(TOTAL / 4);

    // The metrics: 10,000 answered 200, nothing else; the race retries are not route retries.
    const m = await metricsText(gh);
    expect(metric(m, 'gatehouse_http_requests_total', { listener: 'web', route: 'ka', code: '200' })).toBe(TOTAL);
    expect(m.split('\n').filter((l) => l.startsWith('gatehouse_http_requests_total{') && l.includes('route="ka"'))).toHaveLength(1);
    expect(metric(m, 'gatehouse_http_request_duration_seconds_count', { listener: 'web', route: 'ka' })).toBe(TOTAL);
    expect(metric(m, 'gatehouse_upstream_retries_total', { upstream: 'ka' }) ?? 0).toBe(0);

    // GET /state: every count back to zero (listener and backend active counts, per-IP entries),
    // and no connection actor left (the Daemon's dispose checks it again).
    expect(await gh.idleLeftovers()).toEqual([]);
  });

  test('a body too large to send again (over 64 KiB) goes on a fresh connection: the race cannot fail it', async () => {
    // The gateway keeps up to 64 KiB of a request to send it again; a larger body cannot be
    // resent after the race, so it must not be sent on a reused socket at all.
    const client = new Client(`http://127.0.0.1:${gh.port('web')}`);
    const upload = 'u'.repeat(100_000);
    const results: string[] = [];
    try {
      for (const [method, path, body] of [['GET', '/big/warm', ''], ['POST', '/big/upload', upload], ['GET', '/big/after', ''], ['PUT', '/big/upload-2', upload]] as const) {
        const r = await client.request({ path, method, body: body || undefined });
        results.push(`${method} ${r.statusCode} ${(await r.body.text()).replace(/^conn-\d+ /, '')}`);
      }
    } finally {
      await client.close();
    }
    expect(results).toEqual(['GET 200 0', 'POST 200 100000', 'GET 200 0', 'PUT 200 100000']);
    // The uploads each opened their connection; the small GET after them met the race on a reused
    // socket (reset at its head) and was sent again on a fresh one.
    const served = (p: string) => big.served.find((x) => x.path === p)!;
    expect(served('/big/upload')).toMatchObject({ first: true, length: 100_000 });
    expect(served('/big/upload-2')).toMatchObject({ first: true, length: 100_000 });
    expect(served('/big/after').first).toBe(true);
    expect(big.resets).toBeGreaterThanOrEqual(1);
    expect(big.served.map((x) => x.path)).toEqual(['/big/warm', '/big/upload', '/big/after', '/big/upload-2']);
    const m = await metricsText(gh);
    expect(metric(m, 'gatehouse_http_requests_total', { listener: 'web', route: 'big', code: '200' })).toBe(4);
    expect(await gh.idleLeftovers()).toEqual([]);
  });
});
