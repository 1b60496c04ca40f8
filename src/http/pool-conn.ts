/**
 * One pooled upstream connection and the pool's error. Split from the pool (src/http/pool.ts):
 * this is what a caller holds while it sends a request, the pool is the bookkeeping around it.
 */
import type net from 'node:net';

/**
 * Why an acquire failed; callers match on `code`.
 *
 * @example
 * const status = (err as PoolError).code === 'pool_exhausted' ? 503 : 502;
 */
export type PoolErrorCode = 'pool_exhausted' | 'pool_closed' | 'connect_failed' | 'connect_timeout';

/**
 * An acquire that got no connection. `pool_exhausted`: the wait queue was full or the wait
 * passed `queueTimeout`; `connect_failed` / `connect_timeout`: a fresh connect failed (nothing
 * was sent: the caller may try another backend, for any method); `pool_closed`: after close().
 *
 * @example
 * try { await pool.acquire(ex); } catch (err) { if (err instanceof PoolError && err.code === 'pool_exhausted') answer(503); }
 */
export class PoolError extends Error {
  readonly code: PoolErrorCode;
  constructor(code: PoolErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PoolError';
    this.code = code;
  }
}

/**
 * What a pool calls for the connection's current owner (one object per pool, shared by every
 * connection: no closure per request). Never called for an idle connection, nor after the
 * owner released or discarded it.
 *
 * @example
 * const handlers: PoolHandlers<Exchange> = {
 *   read: (ex, conn, n, buf) => ex.parser.feed(buf, 0, n),
 *   closed: (ex, conn, err) => (canRetryOnFresh(conn) ? ex.retry() : ex.fail(err)),
 * };
 */
export interface PoolHandlers<O> {
  /** `n` response bytes were read into `buf` (reused by the next read: copy what you keep). Return false to stop reading until `conn.socket.resume()`. */
  read(owner: O, conn: PooledConnection<O>, n: number, buf: Buffer): boolean;
  /** The socket closed while owned: a FIN (err undefined) or a reset / error. The connection is already out of the pool. */
  closed(owner: O, conn: PooledConnection<O>, err: Error | undefined): void;
  /** The socket's write buffer drained (request body backpressure). */
  drain?(owner: O, conn: PooledConnection<O>): void;
  /** The owner's `conn.socket.setTimeout(ms)` fired (no byte either way for that long). */
  timeout?(owner: O, conn: PooledConnection<O>): void;
}

/** @internal connection states (numbers: a compare, no string). */
export const CONNECTING = 0;
export const BUSY = 1;
export const IDLE = 2;
export const GONE = 3;
export type ConnState = typeof CONNECTING | typeof BUSY | typeof IDLE | typeof GONE;

/** @internal a queued or connecting acquire. */
export interface Waiter<O> {
  owner: O;
  resolve: (c: PooledConnection<O>) => void;
  reject: (e: Error) => void;
  deadline: number;
  fresh: boolean;
}

/**
 * One upstream socket, kept for the socket's whole life and reused across requests (the object
 * is not remade per acquire). `reused` and `responded` are reset on each acquire.
 *
 * @example
 * const conn = await pool.acquire(ex);
 * conn.socket.write(head);
 * // later, the response parser said "complete, keep-alive":
 * pool.release(conn);
 */
export class PooledConnection<O> {
  /** The raw socket: write the request to it; do not add listeners (the pool's dispatch to {@link PoolHandlers}). */
  readonly socket: net.Socket;
  /** The current owner (undefined while idle). */
  owner: O | undefined = undefined;
  /** True when this acquire got a socket that served an earlier request. */
  reused = false;
  /** True once a response byte arrived for the current owner. */
  responded = false;
  /** Requests served on this socket so far (this one included). */
  uses = 0;
  /** @internal */ state: ConnState = CONNECTING;
  /** @internal when idle: the pool clock at release. */ idleSince = 0;
  /** @internal the acquire a connecting socket is for. */ waiter: Waiter<O> | undefined = undefined;
  /** @internal the last 'error' (reported with 'close'). */ error: Error | undefined = undefined;
  /** @internal the pool that owns the socket (typed loosely to avoid a cycle). */ readonly pool: unknown;

  constructor(socket: net.Socket, pool: unknown) {
    this.socket = socket;
    this.pool = pool;
  }
}

/**
 * The keep-alive race rule: a connection that failed (reset or FIN) before any response byte,
 * on a socket that served an earlier request, may be retried once on a fresh connection
 * (`acquire(owner, true)`) whatever the method: the backend closed an idle keep-alive socket
 * as the request went out, so it never processed the request. Anything else is not retried
 * here (the route's `retries` decide, per method).
 *
 * @example
 * closed(ex, conn, err) { if (canRetryOnFresh(conn)) void pool.acquire(ex, true).then(send); else fail(ex, err); }
 */
export function canRetryOnFresh<O>(conn: PooledConnection<O>): boolean {
  return conn.reused && !conn.responded;
}

/**
 * True when a socket can still carry a request: open both ways, not ended, not destroyed,
 * nothing left unwritten.
 *
 * @example
 * if (!socketAlive(conn.socket)) pool.discard(conn);
 */
export function socketAlive(s: net.Socket): boolean {
  return !s.destroyed && s.readyState === 'open' && !s.readableEnded && !s.writableEnded && s.writableLength === 0;
}
