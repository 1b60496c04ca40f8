import net from 'node:net';
import { createActor, setup, type AnyActorRef } from 'xstate';
import { isTls, tlsInfo } from '../tls/listener-tls.ts';
import { connectUpstream, type UpstreamRead } from '../tls/upstream-tls.ts';
import { encodeProxyHeader } from '../net/proxy-protocol.ts';
import type { Logger } from 'pino';
import { Actor } from '../runtime/actor.ts';
import { compile, stepMachine } from '../runtime/compiled-machine.ts';
import { actorEventsEnabled, emitActorEvent } from '../runtime/events.ts';
import type { Registry } from '../runtime/registry.ts';
import { InjectedFaultError } from '../errors.ts';
import { L, OUTCOMES, type Outcome, type StateTable } from '../workers/state-table.ts';
import type { ShardBackend, ShardListener } from '../workers/shard-config.ts';
import type { Balancer } from '../workers/balancer.ts';
import { abandonRead, forwardRead, readHot, releaseHot, TLS_READ } from '../net/read-buffers.ts';
import { adoptSocket, readsThroughOnread, readTlsThroughOnread, type ReadCallback } from '../net/adopt-socket.ts';

export type ConnectionState = 'connecting' | 'open' | 'half_closed_client' | 'half_closed_backend' | 'closing' | 'closed';
export type ConnectionEventType = 'backend.connected' | 'client.end' | 'backend.end' | 'abort' | 'sockets.closed' | 'kill' | 'crash';

/**
 * The life of one proxied TCP connection. `client.end` / `backend.end` are a FIN from that side
 * (half-close, forwarded to the other side); `abort` is an error, a reset, a timeout or a failed
 * connect; `sockets.closed` is both sockets gone; `kill` is a kill (its listener's drain
 * deadline) and `crash` a throw in its handling, both of which destroy the sockets at once.
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
  // A kill or a crash ends the connection from any state but the last.
  on: { kill: '.closed', crash: '.closed' },
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

/** A socket that knows the connection actor it belongs to. */
type OwnedSocket = net.Socket & { [kConn]: ConnectionActor };
/** A socket event handler shared by every connection (`this` is the socket). */
type Handler<A, B, R> = (this: OwnedSocket, a: A, b: B) => R;

/**
 * One actor per proxied TCP connection, in the listener's registry (OTP `simple_one_for_one`):
 * it picks a backend, connects (retrying other backends), forwards both ways with backpressure,
 * forwards half-close, and exits with a DOWN that cleans every map that held it.
 *
 * It is a state machine ({@link connectionMachine}) stepped through a compiled transition table,
 * so a connection costs a table look-up per state change, not an xstate actor
 * (docs/architecture.md, "Compiled machines"). Bytes are counted by the sockets themselves, never
 * per chunk. Every socket handler is guarded: a throw in one ends this connection alone.
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
  /** A fault armed by {@link crash}: thrown from inside the connection's next socket handler. */
  #injected: unknown;
  /** Why the connection crashed, for its DOWN. */
  #error: unknown;
  /** The per-IP place this connection holds (`ipKey` of its client), given back when it ends; 0: none. Set by the listener. */
  ipKey = 0;
  /** When it was accepted, for its age in `/actors`. */
  readonly #since = Date.now();

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
    const c = this.#client;
    return { peer: `${c.remoteAddress}:${c.remotePort}`, backend: this.#backend?.address, bytesIn: c.bytesRead, bytesOut: c.bytesWritten, ageMs: Date.now() - this.#since, ...(isTls(c) && { tls: tlsInfo(c) }) };
  }

  /** This connection's logger: made on first use (a line per connection is rare), bound once. */
  #log(): Logger {
    return this.#ctx.log.child({ actorId: this.id, actorType: this.type });
  }

  #debug(obj: Record<string, unknown>, msg: string): void {
    if (this.#ctx.log.isLevelEnabled('debug')) this.#log().debug(obj, msg);
  }

  /**
   * An accepted socket made to read into the thread's reused buffers through `onread`, toward this
   * connection's backend (see {@link adoptSocket}). Returns the socket unchanged when it cannot.
   */
  static adopt(accepted: net.Socket): net.Socket {
    return adoptSocket(accepted, ConnectionActor.#onClientRead as ReadCallback);
  }

  /** The `onread` callback of a client socket: a listener creates plain sockets with it at accept. */
  static get clientRead(): ReadCallback {
    return ConnectionActor.#onClientRead as ReadCallback;
  }

  /** Starts the connection: the client socket is paused until the backend answers. */
  start(): this {
    const c = this.#client as OwnedSocket;
    c[kConn] = this;
    c.on('error', ConnectionActor.#onClientError);
    c.on('close', ConnectionActor.#onClientClose);
    c.on('timeout', ConnectionActor.#onClientTimeout);
    this.markRunning();
    try {
      this.#connect();
    } catch (err) {
      this.#fail(err);
    }
    return this;
  }

  /**
   * Fault injection (`POST /debug/actors/:id/crash`, debug mode): `err` is thrown from inside this
   * connection's next socket handler (a read from either side, a drain, an end, a close), where
   * the handler guard catches it: the connection ends with DOWN `error`, alone. Returns true.
   */
  crash(err: unknown = new InjectedFaultError(this.id)): boolean {
    if (this.status === 'exited') return false;
    this.#injected = err;
    return true;
  }

  /**
   * Wraps a socket handler shared by every connection: a throw inside it (a bug, or a fault armed
   * by {@link crash}) ends this connection with DOWN `error`, never the shard. Fixed arity and no
   * closure per call, as it runs per chunk; `onThrow` is what the handler returns then.
   */
  static #guard<A, B, R>(fn: Handler<A, B, R>, onThrow: R): Handler<A, B, R> {
    return function (this: OwnedSocket, a: A, b: B): R {
      const c = this[kConn];
      try {
        if (c.#injected !== undefined) c.#raise();
        return fn.call(this, a, b);
      } catch (err) {
        c.#fail(err);
        return onThrow;
      }
    };
  }

  #raise(): never {
    const err = this.#injected;
    this.#injected = undefined;
    throw err;
  }

  // Socket handlers are shared by every connection (`this` is the socket, which points back to its
  // actor): no closure per connection and per event, which churn would pay for in GC.
  static #onClientError = ConnectionActor.#guard(function (this: OwnedSocket, err: Error) {
    this[kConn].#abort('error', err);
  }, undefined);
  static #onClientClose = ConnectionActor.#guard(function (this: OwnedSocket, hadError: boolean) {
    const a = this[kConn];
    if (a.#clientHot) {
      releaseHot(a.#clientHot);
      a.#clientHot = undefined;
    }
    a.#clientClosed = true;
    a.#onSocketClose(hadError);
  }, undefined);
  static #onClientTimeout = ConnectionActor.#guard(function (this: OwnedSocket) {
    this[kConn].#abort('timeout');
  }, undefined);
  // Forwarding (instead of pipe(), which makes ~9 closures per direction per connection): data
  // goes to the other side, a write that returns false pauses the source until the other side's
  // 'drain', and a FIN is passed on with end() (half-close).
  static #onClientData = ConnectionActor.#guard(function (this: OwnedSocket, chunk: Buffer) {
    if (!this[kConn].#backendSocket!.write(chunk)) this.pause();
  }, undefined);
  /** The backend socket's `onread` callback: `n` bytes were read into `buf` (SHARED or its HOT buffer). Returning false stops reading (until resume()). */
  static #onBackendRead = ConnectionActor.#guard(function (this: OwnedSocket, n: number, buf: Buffer): boolean {
    const a = this[kConn];
    const ok = forwardRead(a.#client, n, buf);
    a.#hot = readHot;
    return ok;
  }, false);
  /** The client socket's `onread` callback (an adopted socket): the same, toward the backend. */
  static #onClientRead = ConnectionActor.#guard(function (this: OwnedSocket, n: number, buf: Buffer): boolean {
    const a = this[kConn];
    const ok = forwardRead(a.#backendSocket!, n, buf);
    a.#clientHot = readHot;
    return ok;
  }, false);
  /** The same for a TLS client socket switched to `onread` ({@link readTlsThroughOnread}): a read holds one TLS record at most. */
  static #onClientTlsRead = ConnectionActor.#guard(function (this: OwnedSocket, n: number, buf: Buffer): boolean {
    const a = this[kConn];
    const ok = forwardRead(a.#backendSocket!, n, buf, TLS_READ);
    a.#clientHot = readHot;
    return ok;
  }, false);
  static #onClientDrain = ConnectionActor.#guard(function (this: OwnedSocket) {
    this[kConn].#backendSocket!.resume();
  }, undefined);
  static #onBackendDrain = ConnectionActor.#guard(function (this: OwnedSocket) {
    this[kConn].#client.resume();
  }, undefined);
  static #onClientEnd = ConnectionActor.#guard(function (this: OwnedSocket) {
    const a = this[kConn];
    a.#step('client.end');
    a.#backendSocket!.end();
  }, undefined);
  static #onBackendConnect = ConnectionActor.#guard(function (this: OwnedSocket) {
    const a = this[kConn];
    if (a.#backendSocket !== this) return;
    this.setTimeout(0);
    a.#open(this);
  }, undefined);
  static #onBackendTimeout = ConnectionActor.#guard(function (this: OwnedSocket) {
    const a = this[kConn];
    if (a.#backendSocket === this && a.#state === 'connecting') a.#connectFailed(this, 'timeout');
  }, undefined);
  static #onBackendError = ConnectionActor.#guard(function (this: OwnedSocket, err: Error) {
    const a = this[kConn];
    if (a.#backendSocket !== this) return;
    if (a.#state === 'connecting') a.#connectFailed(this, 'backend_error', err);
    else a.#abort('error', err);
  }, undefined);
  static #onBackendClose = ConnectionActor.#guard(function (this: OwnedSocket, hadError: boolean) {
    const a = this[kConn];
    if (a.#backendSocket !== this || a.#state === 'connecting') return;
    // The handle is gone: its HOT buffer (never one a write holds, see #onBackendRead) is free.
    if (a.#hot) {
      releaseHot(a.#hot);
      a.#hot = undefined;
    }
    a.#backendClosed = true;
    a.#onSocketClose(hadError);
  }, undefined);
  static #onBackendEnd = ConnectionActor.#guard(function (this: OwnedSocket) {
    const a = this[kConn];
    if (a.#backendSocket !== this) return;
    a.#step('backend.end');
    a.#client.end();
  }, undefined);

  #step(ev: ConnectionEventType): void {
    let next: ConnectionState | undefined;
    if (this.#xs) {
      this.#xs.send({ type: ev });
      next = (this.#xs.getSnapshot() as { value: ConnectionState }).value;
      if (next === this.#state) return;
      if (actorEventsEnabled()) emitActorEvent({ type: 'state', id: this.id, actorType: this.type, state: next });
    } else {
      next = stepMachine(table, this, this.#state, ev);
      if (next === undefined) return;
    }
    this.#state = next;
    if (next === 'closed') this.#finish(ev === 'kill' ? 'killed' : ev === 'crash' ? 'error' : this.status === 'stopping' ? 'shutdown' : 'normal');
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
    const { socket, event } = connectUpstream(b.host, b.port, {
      tls: ctx.balancer!.upstream.tls,
      noDelay: true,
      allowHalfOpen: true,
      onRead: ConnectionActor.#onBackendRead as UpstreamRead,
      raw: true,
      ...(ctx.balancer!.upstream.sendProxyProtocol && { proxyHeader: proxyHeaderFor(this.#client, ctx.balancer!.upstream.sendProxyProtocol) }),
    });
    const s = socket as OwnedSocket;
    s[kConn] = this;
    this.#backendSocket = s;
    s.setTimeout(ctx.connectTimeoutMs);
    s.on('timeout', ConnectionActor.#onBackendTimeout);
    s.on('error', ConnectionActor.#onBackendError);
    s.on('close', ConnectionActor.#onBackendClose);
    s.once(event, ConnectionActor.#onBackendConnect);
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
    this.#debug({ backend: b.address, outcome, err }, 'backend connect failed');
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
    let flowing = true;
    if (isTls(c)) {
      // Decrypted records go to the backend from the thread's reused buffers, not a Buffer each.
      const switched = readTlsThroughOnread(c, ConnectionActor.#onClientTlsRead as ReadCallback, (b) => {
        if (!s.write(b)) flowing = false;
      });
      if (!switched) c.on('data', ConnectionActor.#onClientData);
    } else if (!readsThroughOnread(c)) c.on('data', ConnectionActor.#onClientData);
    c.on('drain', ConnectionActor.#onClientDrain);
    c.on('end', ConnectionActor.#onClientEnd);
    s.on('drain', ConnectionActor.#onBackendDrain);
    s.on('end', ConnectionActor.#onBackendEnd);
    if (this.#ctx.listener.idleTimeoutMs > 0) c.setTimeout(this.#ctx.listener.idleTimeoutMs);
    this.#step('backend.connected');
    // The client was accepted paused (pauseOnConnect): a 'data' listener does not start it.
    // (A backend that could not take the bytes read with a TLS handshake resumes it on drain.)
    if (flowing) c.resume();
  }

  /** A socket closed. An unclean close resets the other side; both closed ends the connection. */
  #onSocketClose(hadError: boolean): void {
    if (hadError) this.#abort('error');
    if (this.#clientClosed && (this.#backendSocket === undefined || this.#backendClosed)) this.#step('sockets.closed');
  }

  #abort(reason: 'error' | 'timeout' | 'shutdown', err?: Error): void {
    if (this.#state === 'closed') return;
    if (reason === 'timeout' && this.#state !== 'connecting') this.#debug({}, 'idle timeout');
    else if (err) this.#debug({ err }, 'connection error');
    // A reset from one side is passed on as a reset (RST), not a clean close, to the other.
    const reset = (err as NodeJS.ErrnoException | undefined)?.code === 'ECONNRESET';
    if (reset && !this.#client.destroyed) this.#client.resetAndDestroy();
    else this.#client.destroy();
    if (this.#state === 'connecting' && this.#backendSocket) this.#abandonBackend();
    else if (reset && this.#backendSocket && !this.#backendSocket.destroyed) this.#backendSocket.resetAndDestroy();
    else this.#backendSocket?.destroy();
    this.#step('abort');
  }

  /**
   * A throw in this connection's handling: logged at error with the client's address, both sockets
   * destroyed, outcome `error`, and the machine's `crash` ends it (DOWN `error`, places given back
   * once, by #finish). The listener and every other connection go on.
   */
  #fail(err: unknown): void {
    if (this.status === 'exited') return;
    // A read callback that threw may have chosen a buffer Node will not ask for now.
    abandonRead();
    this.#outcome = 'error';
    this.#error = err;
    this.#log().error({ err, remoteAddress: this.#client.remoteAddress, state: this.#state }, 'connection handler failed: connection closed');
    if (this.#state === 'closed') {
      // The throw came from its own ending: it is gone all the same.
      this.exit('error', err);
      return;
    }
    this.#client.destroy();
    if (this.#state === 'connecting' && this.#backendSocket) this.#abandonBackend();
    else this.#backendSocket?.destroy();
    this.#step('crash');
  }

  #finish(reason: 'normal' | 'shutdown' | 'killed' | 'error'): void {
    const ctx = this.#ctx;
    const c = this.#client;
    ctx.table.bytesAdd(ctx.shard, ctx.listener.slot, c.bytesRead, c.bytesWritten);
    ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, L.ACTIVE, -1);
    ctx.table.listenerRelease(ctx.listener.slot);
    if (this.ipKey !== 0) ctx.table.ipRelease(ctx.listener.slot, ctx.shard, this.ipKey);
    ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, OUTCOMES[this.#outcome]!, 1);
    if (this.#backend) ctx.table.backendActiveAdd(ctx.shard, this.#backend.slot, -1);
    this.#xs?.stop();
    this.exit(reason, reason === 'error' ? this.#error : undefined);
  }

  /** Graceful stop: a connection is left to finish on its own; the listener's drain deadline kills it. */
  protected requestStop(): boolean {
    return true;
  }

  protected forceStop(): void {
    this.#client.destroy();
    if (this.#state === 'connecting' && this.#backendSocket) this.#abandonBackend();
    this.#backendSocket?.destroy();
    this.#step('kill');
  }
}

/** The current backend objects whose address is in `tried` (a reload replaces the objects, not the addresses). */
function excluded(backends: readonly ShardBackend[], tried: readonly string[]): ShardBackend[] {
  return backends.filter((b) => tried.includes(b.address));
}

/**
 * The PROXY protocol header a backend gets for this client (upstream `sendProxyProtocol`): the
 * client's address (itself taken from an incoming PROXY header when there was one) and the
 * address it connected to. A client address the header cannot carry gives a header without
 * addresses (v1 UNKNOWN, v2 LOCAL): the backend then sees the gateway's.
 */
function proxyHeaderFor(client: net.Socket, version: 'v1' | 'v2'): Buffer {
  const v = version === 'v1' ? 1 : 2;
  const src = client.remoteAddress;
  const dst = client.localAddress;
  if (src === undefined || dst === undefined || client.remotePort === undefined || client.localPort === undefined) return encodeProxyHeader({ version: v });
  try {
    return encodeProxyHeader({ version: v, source: { address: src, port: client.remotePort }, destination: { address: dst, port: client.localPort } });
  } catch {
    return encodeProxyHeader({ version: v });
  }
}
