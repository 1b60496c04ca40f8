/**
 * Test fixtures for the upstream pool: a raw `net` backend with scripted misbehaviour (random
 * short keep-alive, resets) and a minimal client that sends GETs through a pool, retrying once
 * on a fresh socket by the keep-alive race rule.
 */
import net from 'node:net';
import { canRetryOnFresh, UpstreamPool, type PoolHandlers, type PooledConnection } from '../../src/http/pool.ts';

export interface BackendOptions {
  /** After each response, close the connection when idle this long (ms, random in [min, max]). */
  keepAlive?: [number, number];
  /** Reset the connection on its Nth request (1-based) before answering. */
  resetOnRequest?: number;
  /** Send part of the response head, then reset. */
  resetAfterBytes?: boolean;
}

export interface Backend {
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  requests: number;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A backend answering each GET with `200` and the body `conn-<n>` (n: its connection number). */
export async function startBackend(o: BackendOptions = {}): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  const b: Backend = { port: 0, accepted: 0, requests: 0, close: async () => {}, [Symbol.asyncDispose]: () => b.close() };
  const server = net.createServer((s) => {
    const id = ++b.accepted;
    let served = 0;
    let pending = '';
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.on('timeout', () => s.destroy());
    s.on('data', (d) => {
      pending += d.toString('latin1');
      let i: number;
      while ((i = pending.indexOf('\r\n\r\n')) >= 0) {
        pending = pending.slice(i + 4);
        served++;
        b.requests++;
        s.setTimeout(0);
        if (o.resetOnRequest === served) return void s.resetAndDestroy();
        if (o.resetAfterBytes) {
          s.write('HTTP/1.1 200 OK\r\nContent-Le');
          return void setImmediate(() => s.resetAndDestroy());
        }
        const body = `conn-${id}`;
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        if (o.keepAlive) {
          const [min, max] = o.keepAlive;
          s.setTimeout(min + Math.floor(Math.random() * (max - min + 1)));
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  b.port = (server.address() as net.AddressInfo).port;
  b.close = () => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(() => r()));
  };
  return b;
}

/** One GET in flight: the pool's owner object. */
export interface Exchange {
  head: string;
  got: Buffer[];
  size: number;
  retried: boolean;
  /** Connections this exchange was sent on, in order. */
  conns: PooledConnection<Exchange>[];
  resolve: (body: string) => void;
  reject: (err: Error) => void;
}

const EOH = Buffer.from('\r\n\r\n');

function complete(ex: Exchange): string | undefined {
  const all = Buffer.concat(ex.got);
  const end = all.indexOf(EOH);
  if (end < 0) return undefined;
  const m = /content-length: (\d+)/i.exec(all.subarray(0, end).toString('latin1'));
  const len = m ? Number(m[1]) : 0;
  if (all.length < end + 4 + len) return undefined;
  return all.subarray(end + 4, end + 4 + len).toString('latin1');
}

/** The client side: read until the response is complete, then release; a retryable failure goes to a fresh socket once. */
export function clientHandlers(pool: () => UpstreamPool<Exchange>): PoolHandlers<Exchange> {
  return {
    read(ex, conn, n, buf) {
      ex.got.push(Buffer.from(buf.subarray(0, n)));
      const body = complete(ex);
      if (body !== undefined) {
        pool().release(conn);
        ex.resolve(body);
      }
      return true;
    },
    closed(ex, conn, err) {
      if (canRetryOnFresh(conn) && !ex.retried) {
        ex.retried = true;
        ex.got.length = 0;
        pool().acquire(ex, true).then((c) => send(ex, c), ex.reject);
      } else ex.reject(err ?? new Error('closed before the response ended'));
    },
  };
}

function send(ex: Exchange, conn: PooledConnection<Exchange>): void {
  ex.conns.push(conn);
  conn.socket.write(ex.head);
}

/** Sends `GET path` through the pool; resolves with the body (`conn-<n>`). */
export function get(pool: UpstreamPool<Exchange>, path = '/'): Promise<string> & { ex: Exchange } {
  const { promise, resolve, reject } = Promise.withResolvers<string>();
  const ex: Exchange = { head: `GET ${path} HTTP/1.1\r\nHost: b\r\n\r\n`, got: [], size: 0, retried: false, conns: [], resolve, reject };
  pool.acquire(ex).then((c) => send(ex, c), reject);
  return Object.assign(promise, { ex });
}

/** A pool toward `port` using {@link clientHandlers}. */
export function makePool(port: number, o: Partial<ConstructorParameters<typeof UpstreamPool<Exchange>>[0]> = {}): UpstreamPool<Exchange> {
  const pool: UpstreamPool<Exchange> = new UpstreamPool<Exchange>({
    host: '127.0.0.1', port, maxConnections: 8, idleTimeout: 4_000, connectTimeout: 2_000,
    handlers: clientHandlers(() => pool), ...o,
  });
  return pool;
}
