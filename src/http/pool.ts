/**
 * The upstream keep-alive pool: one per backend per shard (no sharing across threads), used by
 * the HTTP connection actor to send requests on its sockets (RawSockets for IP backends). See docs/http.md,
 * "Upstream connection pool".
 */
import { performance } from 'node:perf_hooks';
import net from 'node:net';
import { DenseSet } from '../runtime/dense-set.ts';
import { connectUpstream, type ShardUpstreamTls, type UpstreamRead } from '../tls/upstream-tls.ts';
import {
  BUSY, CONNECTING, GONE, IDLE, PoolError, PooledConnection, socketAlive,
  type PoolHandlers, type Waiter,
} from './pool-conn.ts';

export { canRetryOnFresh, PoolError, PooledConnection, type PoolErrorCode, type PoolHandlers } from './pool-conn.ts';

/**
 * What one pool needs: the backend, the upstream's `pool` keys, its `connectTimeout`, and the
 * caller's handlers.
 *
 * @example
 * const o: PoolOptions<Exchange> = { host: '10.0.0.5', port: 8080, ...upstream.pool, connectTimeout: upstream.connectTimeout, handlers };
 */
export interface PoolOptions<O> {
  host: string;
  port: number;
  /** Busy + idle + connecting sockets, at most. */
  maxConnections: number;
  /** Idle sockets kept, at most (default `maxConnections`). */
  maxIdle?: number;
  /** An idle socket is closed after this long (ms); keep it below the backend's keep-alive. */
  idleTimeout: number;
  connectTimeout: number;
  /** Acquires waiting for a socket when all `maxConnections` are taken, at most (default 1024); one more gets `pool_exhausted`. */
  maxQueue?: number;
  /** How long an acquire waits in the queue before `pool_exhausted` (ms, default `connectTimeout`). */
  queueTimeout?: number;
  noDelay?: boolean;
  /** TLS to the backend (upstream `tls`); absent: plain TCP. */
  tls?: ShardUpstreamTls;
  handlers: PoolHandlers<O>;
}

type Conn = PooledConnection<any>;
type Sock = net.Socket & { [kConn]: Conn };
const kConn = Symbol('gatehouse.pooledConnection');
type AnyPool = UpstreamPool<any>;
const poolOf = (c: Conn): AnyPool => c.pool as AnyPool;

/**
 * A keep-alive pool toward one backend. Idle sockets are reused LIFO (the warmest, least likely
 * closed by the backend); one timer per pool sweeps idle sockets and queue deadlines. An idle
 * socket that sees a FIN, an error or any byte is dropped at once, and a socket is checked
 * alive before it is handed out; the rest of the keep-alive race is {@link canRetryOnFresh}.
 *
 * @example
 * const pool = new UpstreamPool({ host, port, maxConnections: 64, idleTimeout: 4000, connectTimeout: 2000, handlers });
 * const conn = pool.tryAcquire(ex) ?? (await pool.acquire(ex));
 * conn.socket.write(requestHead);
 * // response complete and keep-alive: pool.release(conn); otherwise: pool.discard(conn)
 * await pool.close();
 */
export class UpstreamPool<O> {
  readonly host: string;
  readonly port: number;
  /** Sockets handed out or connecting. */
  busy = 0;
  /** Sockets created / acquires served by an idle socket / idle sockets the backend closed (FIN, reset or stray bytes). */
  created = 0;
  reused = 0;
  closedByBackendWhileIdle = 0;
  /** Idle sockets closed by `idleTimeout` or beyond `maxIdle`. */
  expired = 0;
  readonly #o: Required<Omit<PoolOptions<O>, 'host' | 'port' | 'tls'>> & { tls: ShardUpstreamTls | undefined };
  /** Idle sockets, oldest first: taken from the end (LIFO), swept from the front. */
  readonly #idle: Conn[] = [];
  readonly #queue: Waiter<O>[] = [];
  #open = 0;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = 0;
  #closing = false;
  #drained: Promise<void> | undefined;
  #onDrained: (() => void) | undefined;

  constructor(o: PoolOptions<O>) {
    this.host = o.host;
    this.port = o.port;
    this.#o = {
      maxConnections: o.maxConnections, maxIdle: o.maxIdle ?? o.maxConnections, idleTimeout: o.idleTimeout,
      connectTimeout: o.connectTimeout, maxQueue: o.maxQueue ?? 1024, queueTimeout: o.queueTimeout ?? o.connectTimeout,
      noDelay: o.noDelay ?? true, handlers: o.handlers, tls: o.tls,
    };
  }

  get idle(): number { return this.#idle.length; }
  get queued(): number { return this.#queue.length; }
  get closed(): boolean { return this.#closing; }

  /**
   * A live idle socket for `owner` now (the most recently released), or undefined: the
   * synchronous fast path, no promise. Dead idle sockets met on the way are dropped.
   */
  tryAcquire(owner: O): PooledConnection<O> | undefined {
    if (this.#closing) return undefined;
    const idle = this.#idle;
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (!socketAlive(c.socket)) {
        this.closedByBackendWhileIdle++;
        this.#drop(c);
        continue;
      }
      this.reused++;
      this.#own(c, owner, true);
      return c;
    }
    return undefined;
  }

  /**
   * A socket for `owner`: an idle one (reused), else a new connect when under `maxConnections`,
   * else a FIFO wait. `fresh` skips idle sockets (the retry of the keep-alive race).
   * Rejects with a {@link PoolError}.
   */
  acquire(owner: O, fresh = false): Promise<PooledConnection<O>> {
    if (this.#closing) return Promise.reject(new PoolError('pool_closed', 'upstream pool is closed'));
    if (!fresh) {
      const c = this.tryAcquire(owner);
      if (c) return Promise.resolve(c);
    } else if (this.busy + this.#idle.length >= this.#o.maxConnections && this.#idle.length > 0) {
      this.expired++;
      this.#drop(this.#idle.shift()!); // make room with the coldest idle socket
    }
    const { promise, resolve, reject } = Promise.withResolvers<PooledConnection<O>>();
    const w: Waiter<O> = { owner, resolve, reject, deadline: 0, fresh };
    if (this.busy + this.#idle.length < this.#o.maxConnections) this.#connect(w);
    else if (this.#queue.length >= this.#o.maxQueue) {
      reject(new PoolError('pool_exhausted', `upstream pool ${this.host}:${this.port}: ${this.#o.maxConnections} connections busy and ${this.#o.maxQueue} waiting`));
    } else {
      w.deadline = performance.now() + this.#o.queueTimeout;
      this.#queue.push(w);
      this.#arm(w.deadline);
    }
    return promise;
  }

  /**
   * Gives a socket back after a response that was fully read and leaves the connection
   * reusable (the response parser says so). The owner's handlers are no longer called. A
   * socket that is no longer alive is dropped instead.
   */
  release(conn: PooledConnection<O>): void {
    if (conn.state !== BUSY) return;
    conn.owner = undefined;
    if (this.#closing || !socketAlive(conn.socket)) return this.#drop(conn);
    const w = this.#queue[0];
    if (w) {
      if (w.fresh) return this.#drop(conn); // #drop hands the freed place to the waiter: a new connect
      this.#queue.shift();
      return this.#give(conn, w, true);
    }
    if (this.#idle.length >= this.#o.maxIdle) {
      this.expired++;
      return this.#drop(conn);
    }
    this.busy--;
    conn.state = IDLE;
    conn.idleSince = performance.now();
    conn.socket.resume(); // an idle socket must read, to see the backend's FIN at once
    this.#idle.push(conn);
    this.#arm(conn.idleSince + this.#o.idleTimeout);
  }

  /** Destroys a socket that cannot be reused (response not complete, error, `Connection: close`); the owner's handlers are not called. */
  discard(conn: PooledConnection<O>, err?: Error): void {
    if (conn.state === BUSY || conn.state === IDLE) this.#drop(conn, err);
  }

  /** Destroys the idle sockets, refuses new acquires, and resolves once every busy socket came back (released or discarded) and closed. Idempotent. */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      while (this.#idle.length > 0) this.#drop(this.#idle.pop()!);
      const q = this.#queue.splice(0);
      for (const w of q) w.reject(new PoolError('pool_closed', 'upstream pool closed while waiting'));
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#drained = new Promise((r) => (this.#onDrained = r));
      this.#checkDrained();
    }
    return this.#drained!;
  }

  /** close(), and destroys busy and connecting sockets now (their owners see `closed` with `err`). */
  destroy(err?: Error): Promise<void> {
    const done = this.close();
    for (const c of this.#live.values()) {
      if (c.state !== GONE) c.socket.destroy(err ?? new PoolError('pool_closed', 'upstream pool destroyed'));
    }
    return done;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Every socket not yet closed (for destroy(); a DenseSet, as sockets come and go: dense-set.ts). */
  readonly #live = new DenseSet<Conn>();

  #connect(w: Waiter<O>): void {
    this.busy++;
    this.created++;
    // HTTP/1.1 only: say so in ALPN, so that a backend offering h2 does not pick it.
    const { socket, event } = connectUpstream(this.host, this.port, { tls: this.#o.tls, noDelay: this.#o.noDelay, alpn: ['http/1.1'], onRead: onRead as UpstreamRead, raw: true });
    const s = socket as Sock;
    const c = new PooledConnection<O>(s, this);
    s[kConn] = c;
    c.waiter = w;
    this.#open++;
    this.#live.add(c);
    s.setTimeout(this.#o.connectTimeout);
    s.once(event, onConnect);
    s.on('timeout', onTimeout);
    s.on('end', onEnd);
    s.on('error', onError);
    s.on('drain', onDrain);
    s.on('close', onClose);
  }

  #own(c: Conn, owner: O, reused: boolean): void {
    c.state = BUSY;
    c.owner = owner;
    c.reused = reused;
    c.responded = false;
    c.uses++;
    if (reused) this.busy++;
  }

  /** Hands a socket that is already counted busy to a waiter. */
  #give(c: Conn, w: Waiter<O>, reused: boolean): void {
    c.state = BUSY;
    c.owner = w.owner;
    c.reused = reused;
    c.responded = false;
    c.uses++;
    if (reused) this.reused++;
    w.resolve(c);
  }

  /** Takes a socket out of the pool's counts and destroys it; a freed place goes to the queue. */
  #drop(c: Conn, err?: Error): void {
    this.#forget(c);
    c.socket.destroy(err);
  }

  #forget(c: Conn): void {
    if (c.state === GONE) return;
    if (c.state === IDLE) {
      const i = this.#idle.indexOf(c);
      if (i >= 0) this.#idle.splice(i, 1);
    } else this.busy--;
    c.state = GONE;
    c.owner = undefined;
    const w = this.#closing ? undefined : this.#queue.shift();
    if (w) this.#connect(w);
  }

  /** Arms the pool's one timer for `at` unless it already fires sooner. */
  #arm(at: number): void {
    if (this.#timer && this.#timerAt <= at) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(this.#sweep, Math.max(0, at - performance.now()) + 1).unref();
  }

  readonly #sweep = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    const idle = this.#idle;
    let n = 0;
    while (n < idle.length && idle[n]!.idleSince + this.#o.idleTimeout <= now) n++;
    if (n > 0) {
      const old = idle.splice(0, n);
      this.expired += n;
      for (const c of old) {
        c.state = BUSY; // counted as a place once more, then dropped
        this.busy++;
        this.#drop(c);
      }
    }
    while (this.#queue.length > 0 && this.#queue[0]!.deadline <= now) {
      this.#queue.shift()!.reject(new PoolError('pool_exhausted', `upstream pool ${this.host}:${this.port}: no connection within ${this.#o.queueTimeout} ms`));
    }
    if (idle.length > 0) this.#arm(idle[0]!.idleSince + this.#o.idleTimeout);
    if (this.#queue.length > 0) this.#arm(this.#queue[0]!.deadline);
  };

  #checkDrained(): void {
    if (this.#closing && this.#open === 0 && this.#onDrained) {
      this.#onDrained();
      this.#onDrained = undefined;
    }
  }

  // Socket handlers shared by every pooled socket (`this` is the socket): no closure per socket.
  /** @internal */ static connected(c: Conn): void {
    const p = poolOf(c);
    c.socket.setTimeout(0);
    const w = c.waiter!;
    c.waiter = undefined;
    if (c.state !== CONNECTING) return;
    if (p.#closing) {
      w.reject(new PoolError('pool_closed', 'upstream pool closed while connecting'));
      return p.#drop(c);
    }
    p.#give(c, w, false);
  }

  /** @internal */ static idleEvent(c: Conn): void {
    const p = poolOf(c);
    p.closedByBackendWhileIdle++;
    p.#drop(c);
  }

  /** @internal */ static closed(c: Conn): void {
    const p = poolOf(c);
    p.#open--;
    p.#live.delete(c);
    const was = c.state;
    const owner = c.owner;
    const err = c.error;
    if (was === IDLE) p.closedByBackendWhileIdle++;
    p.#forget(c);
    if (was === BUSY) p.#o.handlers.closed(owner, c, err);
    else if (was === CONNECTING && c.waiter) {
      const w = c.waiter;
      c.waiter = undefined;
      w.reject(err instanceof PoolError ? err : new PoolError('connect_failed', `connect to ${p.host}:${p.port} failed${err ? `: ${err.message}` : ''}`, { cause: err }));
    }
    p.#checkDrained();
  }

  /** @internal */ static handlers(c: Conn): PoolHandlers<any> {
    return poolOf(c).#o.handlers;
  }
}

function onRead(this: Sock, n: number, buf: Buffer): boolean {
  const c = this[kConn];
  if (c.state === BUSY) {
    c.responded = true;
    return UpstreamPool.handlers(c).read(c.owner, c, n, buf);
  }
  // Bytes on an idle socket: the backend broke the protocol; the socket is unusable.
  if (c.state === IDLE) UpstreamPool.idleEvent(c);
  return false;
}
function onConnect(this: Sock): void {
  UpstreamPool.connected(this[kConn]);
}
function onTimeout(this: Sock): void {
  const c = this[kConn];
  if (c.state === CONNECTING) this.destroy(new PoolError('connect_timeout', 'connect timed out'));
  else if (c.state === BUSY) UpstreamPool.handlers(c).timeout?.(c.owner, c);
}
function onEnd(this: Sock): void {
  const c = this[kConn];
  if (c.state === IDLE) UpstreamPool.idleEvent(c);
}
function onError(this: Sock, err: Error): void {
  const c = this[kConn];
  c.error = err;
  if (c.state === IDLE) UpstreamPool.idleEvent(c);
}
function onDrain(this: Sock): void {
  const c = this[kConn];
  if (c.state === BUSY) UpstreamPool.handlers(c).drain?.(c.owner, c);
}
function onClose(this: Sock): void {
  UpstreamPool.closed(this[kConn]);
}
