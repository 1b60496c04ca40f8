/**
 * A client connection on the accepted libuv TCP handle itself, without a `net.Socket`: the data
 * plane of plain `protocol: http` listeners. `net.Socket` is a Duplex stream; for a connection
 * that carries one request (the churn load) its construction, its stream state machines and its
 * teardown (ticks, 'finish', 'end', 'close' through the streams layer) cost more CPU than the
 * proxying itself: measured here, a minimal proxy on `net.Socket` spends 105–150 µs of CPU per
 * connection, the same proxy on the bare handle 70 µs, HAProxy 57 (docs/architecture.md,
 * "Accepting a connection"). A RawSocket does what the HTTP connection needs of a socket and no
 * more, on the handle's own methods (`readStart`, `writeBuffer`, `writev`, `shutdown`, `close`,
 * `reset`), with the same meaning as `net.Socket`'s members of the same names:
 *
 * - reads go to the `onread` callback given at creation, in the thread's reused buffers
 *   (read-buffers.ts), as a `net.Socket` made with `onread`; returning false pauses;
 * - `write()` returns false past {@link HIGH_WATER} queued bytes, and 'drain' follows once the
 *   queue is empty; `cork()`/`uncork()` gather writes into one `writev`;
 * - `end()` sends the FIN after the queued writes; the socket closes itself once both sides are
 *   done (half-open otherwise, as `allowHalfOpen`); 'end', 'timeout', 'drain', 'error', 'close'
 *   are emitted as `net.Socket` emits them.
 *
 * The handle methods come from Node's `tcp_wrap` / `stream_wrap` bindings, reached through
 * `process.binding` (deprecated in the documentation only, and allowed for these two modules in
 * Node 24). {@link rawSocketsAvailable} checks them once; where they are missing, or
 * `GATEHOUSE_RAW_SOCKETS=0` is set, listeners accept `net.Socket`s as before.
 *
 * @example
 * const s = new RawSocket(clientHandle, server, onRead); // paused
 * s.on('end', onEnd); s.on('close', onClose);
 * s.resume();
 * s.write(answer); s.end();
 */
import { performance } from 'node:perf_hooks';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { nextReadBuffer } from './read-buffers.ts';
import { UV_EOF, errno, kOwner, load, type Bindings, type ConnectReq, type ShutdownReq, type StreamHandle, type WriteReq } from './stream-bindings.ts';

export { isRawCapable, rawSocketsAvailable } from './stream-bindings.ts';

/** The bindings, once a RawSocket exists (its constructor checks them). */
let sb: Bindings;

/** Queued bytes past which `write()` returns false (Node 24's default stream highWaterMark). */
export const HIGH_WATER = 64 * 1024;
/** The `net.Server` fields a RawSocket keeps up to date (lib/net.js counts its connections). */
interface ServerFields {
  _connections: number;
  _emitCloseIfDrained?: () => void;
}

/** What getpeername / getsockname fill in. */
interface PeerName {
  address?: string;
  port?: number;
  family?: string;
}

/** A read callback: `n` bytes in `buf` (the thread's reused buffer); false pauses reading. */
export type RawReadCallback = (this: RawSocket, n: number, buf: Buffer) => boolean;

export class RawSocket extends EventEmitter {
  #h: StreamHandle | null;
  readonly #onRead: RawReadCallback;
  #server: ServerFields | undefined;
  #buf: Buffer;
  /** The handle reads (resume() after a pause()). */
  #reading = false;
  /** resume() was called (or never paused, for an outgoing connection): read once connected. */
  #wantRead = false;
  /** An outgoing connection not connected yet: writes wait, corked. */
  #connecting = false;
  /** The peer's FIN was read. */
  #eof = false;
  /** end() was called. */
  #ended = false;
  /** The FIN went out (the shutdown completed). */
  #finished = false;
  #destroyOnFinish = false;
  #destroyed = false;
  #needDrain = false;
  #corked = 0;
  #corkBufs: Buffer[] | null = null;
  #corkBytes = 0;
  #timeoutMs = 0;
  #timer: NodeJS.Timeout | undefined;
  #timerDue = 0;
  #lastActive = 0;
  /** What destroy() was given, for the 'error' after the handle closes. */
  #closeErr: Error | undefined;
  #peer: PeerName | undefined;
  #local: PeerName | undefined;
  bytesRead = 0;
  bytesWritten = 0;
  readonly allowHalfOpen: boolean;

  /** `handle`: an accepted TCP handle, not reading yet. Starts paused: resume() to read. */
  constructor(handle: unknown, server: net.Server | undefined, onRead: RawReadCallback, allowHalfOpen = true) {
    super();
    const b = load();
    if (b === null) throw new Error('raw sockets are not available on this Node');
    sb = b;
    const h = handle as StreamHandle;
    this.#h = h;
    this.#onRead = onRead;
    this.allowHalfOpen = allowHalfOpen;
    h[kOwner] = this;
    h.onread = onHandleRead;
    this.#buf = nextReadBuffer();
    h.useUserBuffer(this.#buf);
    if (server !== undefined) {
      const srv = server as unknown as ServerFields;
      srv._connections++;
      this.#server = srv;
    }
  }

  // ---- net.Socket's read-only state -----------------------------------------------------------

  get destroyed(): boolean {
    return this.#destroyed;
  }
  /** As `net.Socket.readyState`: 'opening' until connected, then which sides are still open. */
  get readyState(): 'opening' | 'open' | 'readOnly' | 'writeOnly' | 'closed' {
    if (this.#connecting) return 'opening';
    if (this.#destroyed) return 'closed';
    if (!this.#eof) return this.#ended ? 'readOnly' : 'open';
    return this.#ended ? 'closed' : 'writeOnly';
  }
  get connecting(): boolean {
    return this.#connecting;
  }
  get writableEnded(): boolean {
    return this.#ended;
  }
  get readableEnded(): boolean {
    return this.#eof;
  }
  get writableNeedDrain(): boolean {
    return this.#needDrain;
  }
  /** Bytes queued and not yet written to the kernel (corked ones included). */
  get writableLength(): number {
    return (this.#h?.writeQueueSize ?? 0) + this.#corkBytes;
  }
  get remoteAddress(): string | undefined {
    return this.#peerName().address;
  }
  get remotePort(): number | undefined {
    return this.#peerName().port;
  }
  get remoteFamily(): string | undefined {
    return this.#peerName().family;
  }
  get localAddress(): string | undefined {
    return this.#sockName().address;
  }
  get localPort(): number | undefined {
    return this.#sockName().port;
  }

  #peerName(): PeerName {
    return (this.#peer ??= this.#askName(true)) ?? {};
  }

  #sockName(): PeerName {
    return (this.#local ??= this.#askName(false)) ?? {};
  }

  /** The handle's getpeername (`peer`) or getsockname; undefined when it fails (closed, not connected). */
  #askName(peer: boolean): PeerName | undefined {
    const h = this.#h;
    if (h === null) return undefined;
    // Shaped as the binding fills it: its three stores then find their properties.
    const out: PeerName = { address: undefined, family: undefined, port: undefined };
    return (peer ? h.getpeername(out as Record<string, unknown>) : h.getsockname(out as Record<string, unknown>)) === 0 ? out : undefined;
  }

  setNoDelay(on = true): this {
    this.#h?.setNoDelay(on);
    return this;
  }

  // ---- reading -----------------------------------------------------------------------------------

  pause(): this {
    this.#wantRead = false;
    if (this.#reading && this.#h !== null) {
      this.#reading = false;
      const err = this.#h.readStop();
      if (err) this.destroy(errno(err, 'read'));
    }
    return this;
  }

  resume(): this {
    this.#wantRead = true;
    if (!this.#reading && !this.#eof && !this.#destroyed && !this.#connecting && this.#h !== null) {
      this.#reading = true;
      const err = this.#h.readStart();
      if (err) this.destroy(errno(err, 'read'));
    }
    return this;
  }

  /** @internal The handle read `n` bytes (or an error / EOF when negative). */
  read(n: number): Uint8Array | undefined {
    if (this.#destroyed) return undefined;
    if (n > 0) {
      this.bytesRead += n;
      if (this.#timeoutMs > 0) this.#lastActive = performance.now();
      const buf = this.#buf;
      const more = this.#onRead.call(this, n, buf);
      if (!more && !this.#destroyed) this.pause();
      // The next read lands in the buffer the thread hands out now (the same shared one unless
      // the callback kept this one, see read-buffers.ts).
      const next = nextReadBuffer();
      if (next !== buf && !this.#destroyed) {
        this.#buf = next;
        return next;
      }
      return undefined;
    }
    if (n === 0) return undefined;
    if (n !== UV_EOF) {
      this.destroy(errno(n, 'read'));
      return undefined;
    }
    this.#eof = true;
    this.#reading = false;
    this.#h?.readStop();
    this.emit('end');
    if (this.#destroyed) return undefined;
    // Both sides done: closed. Else, not half-open: our FIN follows (and closes once out).
    if (this.#finished) this.destroy();
    else if (!this.allowHalfOpen) this.end();
    return undefined;
  }

  // ---- writing -----------------------------------------------------------------------------------

  /** Writes `data` (a string in `encoding`, utf8 unless said); false past {@link HIGH_WATER} queued. */
  write(data: Uint8Array | string, encoding?: BufferEncoding | ((err?: Error | null) => void), cb?: (err?: Error | null) => void): boolean {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    const h = this.#h;
    if (this.#ended || this.#destroyed || h === null) {
      if (cb) process.nextTick(cb, new Error(this.#ended ? 'write after end' : 'write to a destroyed socket'));
      return false;
    }
    const len = typeof data === 'string' ? Buffer.byteLength(data, encoding ?? 'utf8') : data.byteLength;
    if (len === 0 && cb === undefined) return !this.#needDrain;
    this.bytesWritten += len;
    if (this.#timeoutMs > 0) this.#lastActive = performance.now();
    if (this.#corked > 0) {
      const b = typeof data === 'string' ? Buffer.from(data, encoding ?? 'utf8') : Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      (this.#corkBufs ??= []).push(b);
      this.#corkBytes += len;
      if (cb) process.nextTick(cb, null);
      return this.#afterWrite();
    }
    const req = new sb.WriteWrap();
    req.handle = h;
    req.oncomplete = onWriteComplete;
    req.callback = cb;
    let err: number;
    if (typeof data !== 'string') err = h.writeBuffer(req, data);
    else if (encoding === 'latin1' || encoding === 'binary') err = h.writeLatin1String(req, data);
    else if (encoding === undefined || encoding === 'utf8' || encoding === 'utf-8') err = h.writeUtf8String(req, data);
    else err = h.writeBuffer(req, Buffer.from(data, encoding));
    return this.#dispatched(req, data, err);
  }

  #dispatched(req: WriteReq, data: unknown, err: number): boolean {
    if (err !== 0) {
      this.destroy(errno(err, 'write'));
      return false;
    }
    if (sb.state[sb.kLastWriteWasAsync]) req.buffer = data;
    else {
      if (req.callback) process.nextTick(req.callback, null);
      // Corked writes past the mark that then went out at once: no completion will come to
      // emit 'drain', so it follows here (after the caller saw the false it returned).
      if (this.#needDrain && this.writableLength === 0) process.nextTick(emitDrain, this);
    }
    return this.#afterWrite();
  }

  /** @internal 'drain', if still due (nothing queued, a write said false). */
  drainIfEmpty(): void {
    if (!this.#needDrain || this.#destroyed || this.writableLength !== 0) return;
    this.#needDrain = false;
    this.emit('drain');
  }

  #afterWrite(): boolean {
    if (this.writableLength < HIGH_WATER) return true;
    this.#needDrain = true;
    return false;
  }

  /** @internal A queued write completed. */
  writeDone(req: WriteReq, status: number): void {
    const cb = req.callback;
    if (this.#destroyed) {
      cb?.(null);
      return;
    }
    if (status < 0) {
      const err = errno(status, 'write');
      this.destroy(err);
      cb?.(err);
      return;
    }
    if (this.#timeoutMs > 0) this.#lastActive = performance.now();
    cb?.(null);
    this.drainIfEmpty();
  }

  cork(): void {
    this.#corked++;
  }

  uncork(): void {
    if (this.#corked === 0 || --this.#corked > 0) return;
    const bufs = this.#corkBufs;
    if (bufs !== null && bufs.length > 0) {
      this.#corkBufs = null;
      this.#corkBytes = 0;
      const h = this.#h;
      if (h === null || this.#destroyed) return;
      const req = new sb.WriteWrap();
      req.handle = h;
      req.oncomplete = onWriteComplete;
      req.callback = undefined;
      const err = bufs.length === 1 ? h.writeBuffer(req, bufs[0]!) : h.writev(req, bufs, true);
      this.#dispatched(req, bufs.length === 1 ? bufs[0] : bufs, err);
    }
    // destroySoon() called while corked: decided now that the corked bytes went out.
    if (this.#destroyOnFinish && !this.#ended && !this.#destroyed) this.#closeSoon();
  }

  /** Sends the FIN once the queued writes are out (`data` written first). */
  end(data?: Uint8Array | string | (() => void), cb?: () => void): this {
    if (typeof data === 'function') {
      cb = data;
      data = undefined;
    }
    if (data !== undefined) this.write(data);
    if (cb) this.once('finish', cb);
    if (this.#ended || this.#destroyed) return this;
    this.#ended = true;
    // Connecting: the writes and the FIN go out once connected (connected()).
    if (this.#connecting) return this;
    this.#shutdown();
    return this;
  }

  #shutdown(): void {
    this.#corked = 1;
    this.uncork();
    const h = this.#h;
    if (h === null || this.#destroyed) return;
    const req = new sb.ShutdownWrap();
    req.handle = h;
    req.oncomplete = onShutdownComplete;
    const err = h.shutdown(req);
    if (err) this.destroy(errno(err, 'shutdown'));
  }

  /** @internal The FIN went out (after every queued write). */
  shutdownDone(status: number): void {
    if (this.#destroyed) return;
    if (status < 0 && status !== -107 /* ENOTCONN: the peer reset first */) {
      this.destroy(errno(status, 'shutdown'));
      return;
    }
    this.#finished = true;
    this.emit('finish');
    if (this.#destroyOnFinish || this.#eof || status < 0) this.destroy();
  }

  /** Ends the writable side and closes once it is done (net.Socket's `destroySoon`). */
  destroySoon(): void {
    if (this.#finished) return void this.destroy();
    this.#destroyOnFinish = true;
    // Corked: uncork() decides, once the corked bytes went out.
    if (this.#ended || (this.#corked > 0 && !this.#connecting)) return;
    this.#closeSoon();
  }

  #closeSoon(): void {
    // Nothing queued here: close() alone has the kernel send what it holds, then the FIN (a
    // shutdown first would add a syscall and a callback, and close the same way). Else the
    // FIN follows the queued writes, and the close follows the FIN (shutdownDone).
    if (!this.#connecting && this.writableLength === 0) this.destroy();
    else this.end();
  }

  /** Closes the handle now (queued writes are dropped); 'error' (with `err`) then 'close' follow. */
  destroy(err?: Error): this {
    return this.#close(err, false);
  }

  /** Closes with a TCP RST (the peer sees ECONNRESET), as `net.Socket.resetAndDestroy()`. */
  resetAndDestroy(): this {
    return this.#close(undefined, true);
  }

  #close(err: Error | undefined, reset: boolean): this {
    if (this.#destroyed) return this;
    this.#destroyed = true;
    this.#connecting = false;
    this.#reading = false;
    this.#corkBufs = null;
    this.#corkBytes = 0;
    this.#clearTimer();
    const srv = this.#server;
    if (srv !== undefined) {
      this.#server = undefined;
      srv._connections--;
      srv._emitCloseIfDrained?.();
    }
    const h = this.#h;
    if (h === null) return this;
    this.#closeErr = err;
    h.readStop();
    if (reset && typeof h.reset === 'function') {
      if (h.reset(onHandleClose) === 0) return this;
    }
    h.close(onHandleClose);
    return this;
  }

  /** @internal The handle is closed: 'error' (if destroyed with one), then 'close'. */
  handleClosed(): void {
    const h = this.#h;
    this.#h = null;
    if (h !== null) h[kOwner] = undefined;
    const err = this.#closeErr;
    if (err !== undefined && this.listenerCount('error') > 0) this.emit('error', err);
    this.emit('close', err !== undefined);
  }

  // ---- outgoing connections ---------------------------------------------------------------------

  /**
   * Connects to `host` (an IP address) and `port` on a new handle, as `net.connect` does: what
   * is written before the connect completes waits and leaves with it, reading starts once
   * connected (pause() before that keeps it off), 'connect' is emitted, a failure destroys the
   * socket with the error ('error', 'close'). Undefined where an outgoing RawSocket cannot be
   * made (the bindings, a host name that needs a lookup): use `net.connect`.
   */
  static connect(host: string, port: number, family: 4 | 6, onRead: RawReadCallback, allowHalfOpen = false): RawSocket | undefined {
    const t = load()?.tcp;
    if (t === undefined) return undefined;
    const h = new t.TCP(t.socketType);
    if (typeof h.connect !== 'function' || typeof h.connect6 !== 'function') return undefined;
    const s = new RawSocket(h, undefined, onRead, allowHalfOpen);
    s.#connecting = true;
    s.#wantRead = true;
    s.#corked = 1;
    const req = new t.ConnectWrap();
    req.oncomplete = onConnectComplete;
    req.address = host;
    req.port = port;
    const err = family === 6 ? h.connect6(req, host, port) : h.connect(req, host, port);
    if (err) process.nextTick(() => s.destroy(errno(err, 'connect')));
    return s;
  }

  /** @internal The connect completed (`status` 0) or failed. */
  connected(status: number): void {
    if (this.#destroyed) return;
    this.#connecting = false;
    if (status < 0) {
      this.destroy(errno(status, 'connect'));
      return;
    }
    if (this.#timeoutMs > 0) this.#lastActive = performance.now();
    this.emit('connect');
    if (this.#destroyed) return;
    if (this.#ended) this.#shutdown();
    else {
      this.#corked = 1;
      this.uncork();
    }
    if (this.#wantRead) this.resume();
  }

  // ---- inactivity --------------------------------------------------------------------------------

  /**
   * Emits 'timeout' after `ms` without a read or a write (0: off), as `net.Socket.setTimeout`.
   * One timer per socket, re-armed only when it fires early: activity stamps a time, it does not
   * touch the timer list.
   */
  setTimeout(ms: number, cb?: () => void): this {
    if (cb) this.once('timeout', cb);
    if (this.#destroyed) return this;
    this.#timeoutMs = ms;
    if (ms <= 0) {
      this.#clearTimer();
      return this;
    }
    const now = performance.now();
    this.#lastActive = now;
    // A timer due later than this new deadline is replaced; an earlier one re-arms when it fires.
    if (this.#timer !== undefined && this.#timerDue <= now + ms) return this;
    this.#arm(ms, now);
    return this;
  }

  #arm(ms: number, now: number): void {
    this.#clearTimer();
    this.#timerDue = now + ms;
    this.#timer = setTimeout(onTimer, ms, this);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** @internal The inactivity timer fired: 'timeout' if the socket was quiet for the whole time. */
  timerFired(): void {
    this.#timer = undefined;
    if (this.#destroyed || this.#timeoutMs <= 0) return;
    const now = performance.now();
    const left = this.#lastActive + this.#timeoutMs - now;
    if (left >= 1) return this.#arm(Math.ceil(left), now);
    this.emit('timeout');
  }
}

// Handlers shared by every RawSocket (no closure per connection).
function onHandleRead(this: StreamHandle): Uint8Array | undefined {
  const s = this[kOwner];
  if (s === undefined) return undefined;
  return s.read(sb.state[sb.kReadBytesOrError]!);
}
function onWriteComplete(this: WriteReq, status: number): void {
  const s = this.handle[kOwner];
  const cb = this.callback;
  if (s === undefined) return void cb?.(null);
  s.writeDone(this, status);
}
function onConnectComplete(this: ConnectReq, status: number, handle: StreamHandle): void {
  handle[kOwner]?.connected(status);
}
function onHandleClose(this: StreamHandle): void {
  this[kOwner]?.handleClosed();
}
function onShutdownComplete(this: ShutdownReq, status: number): void {
  this.handle[kOwner]?.shutdownDone(status);
}
function emitDrain(s: RawSocket): void {
  s.drainIfEmpty();
}
function onTimer(s: RawSocket): void {
  s.timerFired();
}
