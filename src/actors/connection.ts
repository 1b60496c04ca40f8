import net from 'node:net';
import { createActor, setup, type AnyActorRef } from 'xstate';
import type { Logger } from 'pino';
import { Actor } from '../runtime/actor.ts';
import { compile } from '../runtime/compiled-machine.ts';
import { actorEventsEnabled, emitActorEvent } from '../runtime/events.ts';
import type { Registry } from '../runtime/registry.ts';
import { L, type Outcome, type StateTable } from '../workers/state-table.ts';
import type { ShardBackend, ShardListener } from '../workers/shard-config.ts';
import type { Balancer } from '../workers/balancer.ts';

export type ConnectionState = 'connecting' | 'open' | 'half_closed_client' | 'half_closed_backend' | 'closing' | 'closed';
export type ConnectionEventType = 'backend.connected' | 'client.end' | 'backend.end' | 'abort' | 'sockets.closed';

/**
 * The life of one proxied TCP connection. `client.end` / `backend.end` are a FIN from that side
 * (half-close, forwarded to the other side); `abort` is an error, a reset, a timeout or a failed
 * connect; `sockets.closed` is both sockets gone.
 */
export const connectionMachine = setup({
  types: { events: {} as { type: ConnectionEventType } },
}).createMachine({
  id: 'connection',
  initial: 'connecting',
  states: {
    connecting: { on: { 'backend.connected': 'open', abort: 'closing', 'sockets.closed': 'closed' } },
    open: { on: { 'client.end': 'half_closed_client', 'backend.end': 'half_closed_backend', abort: 'closing', 'sockets.closed': 'closed' } },
    half_closed_client: { on: { 'backend.end': 'closing', abort: 'closing', 'sockets.closed': 'closed' } },
    half_closed_backend: { on: { 'client.end': 'closing', abort: 'closing', 'sockets.closed': 'closed' } },
    closing: { on: { 'sockets.closed': 'closed' } },
    closed: { type: 'final' },
  },
});

const table = compile<ConnectionState, ConnectionEventType>(connectionMachine);

/** Everything a listener shares with its connections: one object per listener, not per connection. */
export interface ConnectionContext {
  shard: number;
  listener: ShardListener;
  table: StateTable;
  balancer: Balancer | undefined;
  connectTimeoutMs: number;
  connectRetries: number;
  log: Logger;
  registry: Registry<ConnectionActor>;
  /** 'xstate' runs a full xstate actor per connection (the naive variant kept for the bench). */
  mode: 'light' | 'xstate';
}

let seq = 0;

const kConn = Symbol('gatehouse.connection');
/** Set on a client socket that reads through `onread` (no 'data' events). */
const kUserReads = Symbol('gatehouse.userReads');

/*
 * The backend side reads into buffers of its own (net.connect's `onread`) instead of a fresh
 * 64 KiB allocation per read, which the kernel then copies into cold memory (docs/benchmarks.md,
 * "Bulk"). Every backend socket of the thread starts on SHARED; what is read into it is copied
 * before it is written (the write may keep its chunk until flushed, and the next read by any
 * socket overwrites SHARED). A full read means data is streaming: the socket then gets a HOT
 * buffer of its own, from a free list of the thread, written without a copy. A HOT buffer that a
 * write still holds (not flushed at once) is left to that write and replaced; a short read whose
 * write completed gives it back and returns the socket to SHARED. So an idle connection holds no
 * read buffer, and a busy one reuses the same warm 64 KiB.
 */
const READ_BUF = 64 * 1024;
const SHARED = Buffer.allocUnsafeSlow(READ_BUF);
const freeHot: Buffer[] = [];
const FREE_HOT_MAX = 32;
/** The buffer the socket that just read is to read into next: set by the read callback, taken by {@link nextReadBuffer} right after it (Node calls both back to back, synchronously). */
let handoff: Buffer = SHARED;
function takeHot(): Buffer {
  return freeHot.pop() ?? Buffer.allocUnsafeSlow(READ_BUF);
}
function releaseHot(b: Buffer): void {
  if (freeHot.length < FREE_HOT_MAX) freeHot.push(b);
}
/** The reading socket's HOT buffer after {@link forwardRead} (an out-parameter: no object per read). */
let readHot: Buffer | undefined;
/**
 * Writes the `n` bytes a socket read into `buf` (SHARED or its HOT buffer) to `to`, and decides
 * the buffer it reads into next (`handoff`) and its HOT buffer (`readHot`). Returns what the
 * write returned: false asks the reading socket to stop until `to` drains.
 */
function forwardRead(to: net.Socket, n: number, buf: Buffer): boolean {
  if (buf === SHARED) {
    // Copied: the next read by any socket of the thread overwrites SHARED.
    const ok = to.write(Buffer.from(buf.subarray(0, n)));
    readHot = n === READ_BUF ? (handoff = takeHot()) : undefined;
    return ok;
  }
  const queued = to.writableLength;
  const ok = to.write(n === READ_BUF ? buf : buf.subarray(0, n));
  if (to.writableLength > queued) {
    // Not flushed at once: the pending write holds buf, which is the write's now.
    readHot = n === READ_BUF ? takeHot() : undefined;
    handoff = readHot ?? SHARED;
  } else if (n < READ_BUF) {
    releaseHot(buf);
    readHot = undefined;
    handoff = SHARED;
  } else {
    readHot = buf;
    handoff = buf;
  }
  return ok;
}
function nextReadBuffer(): Buffer {
  const b = handoff;
  handoff = SHARED;
  return b;
}
/** A socket that knows the connection actor it belongs to. */
type OwnedSocket = net.Socket & { [kConn]: ConnectionActor };

/**
 * One actor per proxied TCP connection, in the listener's registry (OTP `simple_one_for_one`):
 * it picks a backend, connects (retrying other backends), forwards both ways with backpressure,
 * forwards half-close, and exits with a DOWN that cleans every map that held it.
 *
 * It is a state machine ({@link connectionMachine}) stepped through a compiled transition table,
 * so a connection costs a table look-up per state change, not an xstate actor (DESIGN.md,
 * "Measured costs"). Bytes are counted by the sockets themselves, never per chunk.
 */
export class ConnectionActor extends Actor {
  #state: ConnectionState = table.initial;
  readonly #ctx: ConnectionContext;
  readonly #client: net.Socket;
  #backendSocket: net.Socket | undefined;
  #backend: ShardBackend | undefined;
  /** Addresses of the backends this connection failed to connect to (by address: a reload makes new backend objects). */
  #tried: string[] | undefined;
  /** This connection holds its backend's half-open trial permit. */
  #trial = false;
  #outcome: Outcome = 'ok';
  #clientClosed = false;
  #backendClosed = false;
  #xs: AnyActorRef | undefined;
  /** The HOT buffer the backend socket reads into, if it has one (else SHARED). */
  #hot: Buffer | undefined;
  /** The same for the client socket, when it reads through `onread` (see {@link ConnectionActor.adopt}). */
  #clientHot: Buffer | undefined;
  /** The per-IP place this connection holds (`ipKey` of its client), given back when it ends; 0: none. Set by the listener. */
  ipKey = 0;

  constructor(ctx: ConnectionContext, client: net.Socket) {
    super(`conn:${ctx.shard}:${++seq}`, 'connection');
    this.#ctx = ctx;
    this.#client = client;
    if (ctx.mode === 'xstate') {
      this.#xs = createActor(connectionMachine);
      this.#xs.subscribe({ error: () => {} });
      this.#xs.start();
    }
  }

  get state(): string {
    return this.#state;
  }

  override describe(): Record<string, unknown> {
    return { peer: `${this.#client.remoteAddress}:${this.#client.remotePort}`, backend: this.#backend?.address };
  }

  /**
   * An accepted socket (paused: `pauseOnConnect`) made to read like the backend side, into the
   * thread's reused buffers through `onread`, instead of a fresh 64 KiB buffer per read (the cost
   * that keeps a Node proxy's upload below HAProxy's, docs/benchmarks.md). Node offers `onread`
   * only to sockets it creates from options, so the accepted socket's handle is moved into a new
   * socket made with it; the old socket object is dropped without closing the handle. Returns
   * the socket unchanged when its handle cannot be taken.
   */
  static adopt(accepted: net.Socket): net.Socket {
    const old = accepted as net.Socket & { _handle?: { useUserBuffer?: unknown } | null };
    const handle = old._handle;
    if (!handle || typeof handle.useUserBuffer !== 'function') return accepted;
    old._handle = null;
    old.destroy();
    const s = new net.Socket({
      handle,
      allowHalfOpen: true,
      pauseOnCreate: true,
      readable: true,
      writable: true,
      onread: { buffer: nextReadBuffer, callback: ConnectionActor.#onClientRead as (n: number, buf: Uint8Array) => boolean },
    } as unknown as net.SocketConstructorOpts) as net.Socket & { [kUserReads]?: true };
    s[kUserReads] = true;
    return s;
  }

  /** Starts the connection: the client socket is paused until the backend answers. */
  start(): this {
    const c = this.#client as OwnedSocket;
    c[kConn] = this;
    c.on('error', ConnectionActor.#onClientError);
    c.on('close', ConnectionActor.#onClientClose);
    c.on('timeout', ConnectionActor.#onClientTimeout);
    this.markRunning();
    this.#connect();
    return this;
  }

  // Socket handlers are shared by every connection (`this` is the socket, which points back to its
  // actor): no closure per connection and per event, which churn would pay for in GC.
  static #onClientError(this: OwnedSocket, err: Error): void {
    this[kConn].#abort('error', err);
  }
  static #onClientClose(this: OwnedSocket, hadError: boolean): void {
    const a = this[kConn];
    if (a.#clientHot) {
      releaseHot(a.#clientHot);
      a.#clientHot = undefined;
    }
    a.#clientClosed = true;
    a.#onSocketClose(hadError);
  }
  static #onClientTimeout(this: OwnedSocket): void {
    this[kConn].#abort('timeout');
  }
  // Forwarding (instead of pipe(), which makes ~9 closures per direction per connection): data
  // goes to the other side, a write that returns false pauses the source until the other side's
  // 'drain', and a FIN is passed on with end() (half-close).
  static #onClientData(this: OwnedSocket, chunk: Buffer): void {
    if (!this[kConn].#backendSocket!.write(chunk)) this.pause();
  }
  /** The backend socket's `onread` callback: `n` bytes were read into `buf` (SHARED or its HOT buffer). Returning false stops reading (until resume()). */
  static #onBackendRead(this: OwnedSocket, n: number, buf: Buffer): boolean {
    const a = this[kConn];
    const ok = forwardRead(a.#client, n, buf);
    a.#hot = readHot;
    return ok;
  }
  /** The client socket's `onread` callback (an adopted socket): the same, toward the backend. */
  static #onClientRead(this: OwnedSocket, n: number, buf: Buffer): boolean {
    const a = this[kConn];
    const ok = forwardRead(a.#backendSocket!, n, buf);
    a.#clientHot = readHot;
    return ok;
  }
  static #onClientDrain(this: OwnedSocket): void {
    this[kConn].#backendSocket!.resume();
  }
  static #onBackendDrain(this: OwnedSocket): void {
    this[kConn].#client.resume();
  }
  static #onClientEnd(this: OwnedSocket): void {
    const a = this[kConn];
    a.#step('client.end');
    a.#backendSocket!.end();
  }
  static #onBackendConnect(this: OwnedSocket): void {
    const a = this[kConn];
    if (a.#backendSocket !== this) return;
    this.setTimeout(0);
    a.#open(this);
  }
  static #onBackendTimeout(this: OwnedSocket): void {
    const a = this[kConn];
    if (a.#backendSocket === this && a.#state === 'connecting') a.#connectFailed(this, 'timeout');
  }
  static #onBackendError(this: OwnedSocket, err: Error): void {
    const a = this[kConn];
    if (a.#backendSocket !== this) return;
    if (a.#state === 'connecting') a.#connectFailed(this, 'backend_error', err);
    else a.#abort('error', err);
  }
  static #onBackendClose(this: OwnedSocket, hadError: boolean): void {
    const a = this[kConn];
    if (a.#backendSocket !== this || a.#state === 'connecting') return;
    // The handle is gone: its HOT buffer (never one a write holds, see #onBackendRead) is free.
    if (a.#hot) {
      releaseHot(a.#hot);
      a.#hot = undefined;
    }
    a.#backendClosed = true;
    a.#onSocketClose(hadError);
  }
  static #onBackendEnd(this: OwnedSocket): void {
    const a = this[kConn];
    if (a.#backendSocket !== this) return;
    a.#step('backend.end');
    a.#client.end();
  }

  #step(ev: ConnectionEventType): void {
    let next: ConnectionState | undefined;
    if (this.#xs) {
      this.#xs.send({ type: ev });
      next = (this.#xs.getSnapshot() as { value: ConnectionState }).value;
    } else {
      next = table.next(this.#state, ev);
    }
    if (next === undefined || next === this.#state) return;
    this.#state = next;
    if (actorEventsEnabled()) emitActorEvent({ type: 'state', id: this.id, actorType: this.type, state: next });
    if (next === 'closed') this.#finish(this.status === 'stopping' ? 'shutdown' : 'normal');
  }

  #connect(): void {
    const ctx = this.#ctx;
    const b = ctx.balancer?.pick(this.#tried && excluded(ctx.balancer.upstream.backends, this.#tried));
    if (!b) {
      this.#outcome = this.#tried ? this.#outcome : 'no_backend';
      this.#client.destroy();
      this.#step('abort');
      return;
    }
    this.#backend = b;
    this.#trial = ctx.balancer!.trial;
    ctx.table.backendActiveAdd(ctx.shard, b.slot, 1);
    const s = net.connect({
      host: b.host,
      port: b.port,
      allowHalfOpen: true,
      noDelay: true,
      onread: { buffer: nextReadBuffer, callback: ConnectionActor.#onBackendRead as (n: number, buf: Uint8Array) => boolean },
    }) as OwnedSocket;
    s[kConn] = this;
    this.#backendSocket = s;
    s.setTimeout(ctx.connectTimeoutMs);
    s.on('timeout', ConnectionActor.#onBackendTimeout);
    s.on('error', ConnectionActor.#onBackendError);
    s.on('close', ConnectionActor.#onBackendClose);
    s.once('connect', ConnectionActor.#onBackendConnect);
  }

  /** Drops a backend socket that never connected. */
  #releaseBackend(): ShardBackend {
    const b = this.#backend!;
    this.#backendSocket!.destroy();
    this.#ctx.table.backendActiveAdd(this.#ctx.shard, b.slot, -1);
    this.#backend = undefined;
    this.#backendSocket = undefined;
    return b;
  }

  /** Drops a connect in progress because the client went away: not the backend's fault. */
  #abandonBackend(): void {
    const b = this.#releaseBackend();
    this.#ctx.balancer?.abandoned(b, this.#trial);
    this.#trial = false;
  }

  #connectFailed(s: net.Socket, outcome: Outcome, err?: Error): void {
    if (this.#backendSocket !== s) return;
    const ctx = this.#ctx;
    const b = this.#releaseBackend();
    ctx.balancer?.failed(b, this.#trial);
    this.#trial = false;
    this.#outcome = outcome;
    ctx.log.debug({ backend: b.address, outcome, err }, 'backend connect failed');
    (this.#tried ??= []).push(b.address);
    if (this.status === 'stopping' || this.#client.destroyed || this.#tried.length > ctx.connectRetries) {
      this.#abort('error');
      this.#onSocketClose(false);
      return;
    }
    this.#connect();
  }

  #open(s: net.Socket): void {
    const c = this.#client;
    this.#ctx.balancer?.succeeded(this.#backend!, this.#trial);
    this.#trial = false;
    if (c.destroyed) {
      s.destroy();
      this.#backendClosed = true;
      this.#onSocketClose(false);
      return;
    }
    this.#outcome = 'ok';
    if (!(c as net.Socket & { [kUserReads]?: true })[kUserReads]) c.on('data', ConnectionActor.#onClientData);
    c.on('drain', ConnectionActor.#onClientDrain);
    c.on('end', ConnectionActor.#onClientEnd);
    s.on('drain', ConnectionActor.#onBackendDrain);
    s.on('end', ConnectionActor.#onBackendEnd);
    if (this.#ctx.listener.idleTimeoutMs > 0) c.setTimeout(this.#ctx.listener.idleTimeoutMs);
    this.#step('backend.connected');
    // The client was accepted paused (pauseOnConnect): a 'data' listener does not start it.
    c.resume();
  }

  /** A socket closed. An unclean close resets the other side; both closed ends the connection. */
  #onSocketClose(hadError: boolean): void {
    if (hadError) this.#abort('error');
    if (this.#clientClosed && (this.#backendSocket === undefined || this.#backendClosed)) this.#step('sockets.closed');
  }

  #abort(reason: 'error' | 'timeout' | 'shutdown', err?: Error): void {
    if (this.#state === 'closed') return;
    if (reason === 'timeout' && this.#state !== 'connecting') this.#ctx.log.debug('idle timeout');
    else if (err) this.#ctx.log.debug({ err }, 'connection error');
    // A reset from one side is passed on as a reset (RST), not a clean close, to the other.
    const reset = (err as NodeJS.ErrnoException | undefined)?.code === 'ECONNRESET';
    if (reset && !this.#client.destroyed) this.#client.resetAndDestroy();
    else this.#client.destroy();
    if (this.#state === 'connecting' && this.#backendSocket) this.#abandonBackend();
    else if (reset && this.#backendSocket && !this.#backendSocket.destroyed) this.#backendSocket.resetAndDestroy();
    else this.#backendSocket?.destroy();
    this.#step('abort');
  }

  #finish(reason: 'normal' | 'shutdown' | 'killed'): void {
    const ctx = this.#ctx;
    const c = this.#client;
    ctx.table.bytesAdd(ctx.shard, ctx.listener.slot, c.bytesRead, c.bytesWritten);
    ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, L.ACTIVE, -1);
    ctx.table.listenerRelease(ctx.listener.slot);
    if (this.ipKey !== 0) ctx.table.ipRelease(ctx.listener.slot, ctx.shard, this.ipKey);
    ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, outcomeField(this.#outcome), 1);
    if (this.#backend) ctx.table.backendActiveAdd(ctx.shard, this.#backend.slot, -1);
    this.#xs?.stop();
    this.exit(reason);
  }

  /** Graceful stop: a connection is left to finish on its own; the listener's drain deadline kills it. */
  protected requestStop(): boolean {
    return true;
  }

  protected forceStop(): void {
    this.#client.destroy();
    if (this.#state === 'connecting' && this.#backendSocket) this.#abandonBackend();
    this.#backendSocket?.destroy();
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#finish('killed');
  }
}

/** The current backend objects whose address is in `tried` (a reload replaces the objects, not the addresses). */
function excluded(backends: readonly ShardBackend[], tried: readonly string[]): ShardBackend[] {
  return backends.filter((b) => tried.includes(b.address));
}

function outcomeField(o: Outcome): number {
  switch (o) {
    case 'ok':
      return L.OK;
    case 'timeout':
      return L.TIMEOUT;
    case 'backend_error':
      return L.BACKEND_ERROR;
    case 'no_backend':
      return L.NO_BACKEND;
    default:
      return L.ERROR;
  }
}
