/**
 * Moving an accepted socket's handle into a new socket that reads through `onread`. Split from
 * the connection actor: it is socket plumbing (Node internals), not the connection's life, and
 * any proxying listener could use it.
 */
import net from 'node:net';
import { nextReadBuffer } from './read-buffers.ts';
import { RawSocket, isRawCapable, rawSocketsAvailable, type RawReadCallback } from './raw-socket.ts';

/** Set on a socket that reads through `onread` (no 'data' events). */
const kUserReads = Symbol('gatehouse.userReads');

/** A socket's `onread` callback: `n` bytes were read into `buf`; returning false stops reading (until resume()). */
export type ReadCallback = (this: net.Socket, n: number, buf: Buffer) => boolean;

/**
 * An accepted socket (paused: `pauseOnConnect`) made to read into the thread's reused buffers
 * through `onread` ({@link nextReadBuffer}), calling `onRead`, instead of a fresh 64 KiB buffer
 * per read (the cost that keeps a Node proxy's upload below HAProxy's, docs/benchmarks.md). Node
 * offers `onread` only to sockets it creates from options, so the accepted socket's handle is
 * moved into a new socket made with it; the old socket object is dropped without closing the
 * handle. Returns the socket unchanged when its handle cannot be taken.
 *
 * @example
 * const s = adoptSocket(accepted, onRead); // paused, allowHalfOpen; resume() to start reading
 * if (!readsThroughOnread(s)) s.on('data', onData);
 */
export function adoptSocket(accepted: net.Socket, onRead: ReadCallback): net.Socket {
  // Accepted through `onread` already ({@link acceptThroughOnread}).
  if (readsThroughOnread(accepted)) return accepted;
  const old = accepted as net.Socket & { _handle?: { useUserBuffer?: unknown } | null };
  const handle = old._handle;
  // A TLS socket's handle is its TLS layer, which cannot move to a plain socket: kept as it is.
  if ((accepted as net.Socket & { encrypted?: boolean }).encrypted === true) return accepted;
  // Bytes already read (put back after a PROXY protocol header), or a peer address taken from
  // that header: both live on this socket object, which must then stay the one in use.
  if (accepted.readableLength > 0 || Object.hasOwn(accepted, 'remoteAddress')) return accepted;
  if (!handle || typeof handle.useUserBuffer !== 'function') return accepted;
  old._handle = null;
  old.destroy();
  return onreadSocket(handle, true, true, onRead);
}

/** A socket around an accepted TCP `handle` that reads into the thread's reused buffers, calling `onRead`. */
function onreadSocket(handle: unknown, allowHalfOpen: boolean, pauseOnCreate: boolean, onRead: ReadCallback): net.Socket {
  const s = new net.Socket({
    handle,
    allowHalfOpen,
    pauseOnCreate,
    readable: true,
    writable: true,
    onread: { buffer: nextReadBuffer, callback: onRead as unknown as (n: number, buf: Uint8Array) => boolean },
  } as unknown as net.SocketConstructorOpts) as net.Socket & { [kUserReads]?: true };
  s[kUserReads] = true;
  return s;
}

/** What {@link acceptThroughOnread} reads of a `net.Server` (lib/net.js fields). */
interface ServerFields {
  _handle?: { onconnection?: (err: number, clientHandle: ClientHandle | undefined) => void } | null;
  _connections: number;
  allowHalfOpen?: boolean;
  pauseOnConnect?: boolean;
  noDelay?: boolean;
  keepAlive?: boolean;
  blockList?: unknown;
  maxConnections?: number | null;
}
interface ClientHandle {
  useUserBuffer?: unknown;
}

/**
 * Makes a bound server create each accepted socket reading through `onread` ({@link adoptSocket}
 * without its cost): Node's own `onconnection` builds a `net.Socket` for the accepted handle, and
 * {@link adoptSocket} then builds a second one around the same handle and destroys the first; in a
 * load of one request per connection that second socket and the first one's teardown are a few
 * percent of the CPU per connection. This replaces the listening handle's `onconnection` with
 * one that does what lib/net.js's does (count the connection, set `server`, emit 'connection')
 * for a socket made with `onread` from the start, whenever `use()` says so at that accept (a
 * listener that must read a PROXY header or wrap TLS first says no: Node's own path then runs).
 * Node's path also runs for what this does not mirror (`maxConnections`, `keepAlive`,
 * `blockList` set on the server). With `raw`, each such accept makes a {@link RawSocket} on the
 * handle instead of a `net.Socket` (where this Node allows it): the 'connection' listener must
 * then take one. Returns false, changing nothing, when the server's internals are not the
 * expected ones.
 *
 * @example
 * await bind(server); // listening
 * acceptThroughOnread(server, onRead, () => !listener.tls);
 * server.on('connection', (s) => { if (readsThroughOnread(s)) ... s.resume(); });
 */
export function acceptThroughOnread(server: net.Server, onRead: ReadCallback, use: () => boolean, raw = false): boolean {
  const srv = server as net.Server & ServerFields;
  const handle = srv._handle;
  const original = handle?.onconnection;
  if (!handle || typeof original !== 'function' || typeof srv._connections !== 'number') return false;
  const rawOk = raw && rawSocketsAvailable();
  handle.onconnection = function onconnection(this: unknown, err: number, clientHandle: ClientHandle | undefined): void {
    if (err || !clientHandle || typeof clientHandle.useUserBuffer !== 'function' || srv.maxConnections != null || srv.keepAlive || srv.blockList || !use()) {
      original.call(this, err, clientHandle);
      return;
    }
    if (rawOk && isRawCapable(clientHandle)) {
      // No net.Socket at all (raw-socket.ts): the caller declared it handles a RawSocket.
      const r = new RawSocket(clientHandle, srv, onRead as unknown as RawReadCallback, srv.allowHalfOpen === true);
      if (srv.noDelay) r.setNoDelay(true);
      if (srv.pauseOnConnect !== true) r.resume();
      srv.emit('connection', r);
      return;
    }
    const s = onreadSocket(clientHandle, srv.allowHalfOpen === true, srv.pauseOnConnect === true, onRead) as net.Socket & { server?: net.Server; _server?: net.Server };
    if (srv.noDelay) s.setNoDelay(true);
    srv._connections++;
    s.server = srv;
    s._server = srv;
    srv.emit('connection', s);
  };
  return true;
}

/** True for a socket made by {@link adoptSocket} (or a RawSocket): its reads go to its `onread` callback, not to 'data' events. */
export function readsThroughOnread(s: net.Socket): boolean {
  return (s as net.Socket & { [kUserReads]?: true })[kUserReads] === true || s instanceof (RawSocket as unknown as typeof net.Socket);
}

/** Node's own symbols of an `onread` socket (lib/net.js: `kBuffer`, `kBufferCb`, `kBufferGen`), looked up once by description. */
let onreadSymbols: { buffer: symbol; callback: symbol; gen: symbol } | null | undefined;

function findOnreadSymbols(s: net.Socket): { buffer: symbol; callback: symbol; gen: symbol } | null {
  if (onreadSymbols !== undefined) return onreadSymbols;
  const by = new Map(Object.getOwnPropertySymbols(s).map((k) => [k.description, k]));
  const buffer = by.get('kBuffer');
  const callback = by.get('kBufferCb');
  const gen = by.get('kBufferGen');
  onreadSymbols = buffer && callback && gen ? { buffer, callback, gen } : null;
  return onreadSymbols;
}

/**
 * Makes a TLS socket (handshake done, paused) deliver its decrypted bytes to `onRead` in the
 * thread's reused buffers ({@link nextReadBuffer}) instead of a fresh Buffer per TLS record: the
 * allocation that, at bulk rates, makes V8 run a full GC of the shard's heap every few hundred
 * MB (docs/benchmarks.md, "TLS bulk"). Node takes `onread` only when it creates a socket itself
 * (not for a server-side TLSSocket), so this sets what `net.Socket`'s constructor sets for an
 * `onread` socket, on the TLS layer's stream handle, which reads into a user buffer as a TCP
 * handle does. `pending` receives the bytes decrypted before the switch (in order, before any
 * `onRead`). Returns false, changing nothing, when the socket cannot switch (Node's internals
 * differ, bytes are buffered in a way it cannot take): it then reads through 'data' events.
 *
 * @example
 * if (!readTlsThroughOnread(tlsSocket, onRead, (b) => backend.write(b))) tlsSocket.on('data', onData);
 */
export function readTlsThroughOnread(s: net.Socket, onRead: ReadCallback, pending: (chunk: Buffer) => void): boolean {
  const handle = (s as net.Socket & { _handle?: { useUserBuffer?: (b: Uint8Array) => void } | null })._handle;
  // The TLS layer keeps reading while the stream is paused (until its buffer is full): from the
  // switch on, its next read lands in `first` and reaches `onRead`, after `pending` below.
  if (!handle || typeof handle.useUserBuffer !== 'function') return false;
  const k = findOnreadSymbols(s);
  if (k === null) return false;
  const o = s as unknown as Record<symbol, unknown>;
  // What lib/net.js sets for `onread: { buffer: fn, callback }` and then for its first read.
  const first = nextReadBuffer();
  o[k.gen] = nextReadBuffer;
  o[k.callback] = onRead;
  o[k.buffer] = first;
  handle.useUserBuffer(first);
  // Records decrypted with the handshake (a TLS 1.3 client's first bytes come with its Finished)
  // wait in the stream's buffer: handed over first; from here on the handle reads into `first`.
  while (s.readableLength > 0) {
    const b = s.read() as Buffer | null;
    if (b === null) break;
    pending(b);
  }
  (s as net.Socket & { [kUserReads]?: true })[kUserReads] = true;
  return true;
}
