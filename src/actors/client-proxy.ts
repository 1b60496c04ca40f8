/**
 * One hub client on one shard (`client:<clientId>`, type `client-proxy`): from the upgrade request
 * (token check) through its WebSocket's life to its DOWN. The listener ({@link HubListenerActor})
 * owns its clients as OTP's `simple_one_for_one` does: they live in its {@link Registry} (indexes
 * `user` and `node`), and leave every index by their own DOWN.
 *
 * Like a TCP connection, a client is a state machine ({@link clientProxyMachine}) stepped through
 * a compiled transition table, not a full xstate actor: hubs hold tens of thousands of clients.
 *
 * Nothing ever awaits a client. Its frames, both ways (rate limit, routing, the bounded send
 * queue and its overflow policy), are its base class's, {@link ClientFrames} in client-frames.ts:
 * this file keeps the handshake, the socket's events and the lifecycle.
 */
import type net from 'node:net';
import { isTls, tlsInfo } from '../tls/listener-tls.ts';
import { setup } from 'xstate';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { compile, stepMachine } from '../runtime/compiled-machine.ts';
import type { Registry } from '../runtime/registry.ts';
import { L, OUTCOMES, type StateTable } from '../workers/state-table.ts';
import type { ShardHubSettings, ShardListener } from '../workers/shard-config.ts';
import { newClientId, type HubFromShard } from '../hub/messages.ts';
import { rejectUpgrade } from '../net/reject-upgrade.ts';
import { welcomeFrame, type HistoryPosition } from '../hub/frames.ts';
import { ClientFrames } from './client-frames.ts';

export { CLIENT_FLOOD_BURSTS, SOCKET_HIGH_WATER } from './client-frames.ts';

export type ClientState = 'handshaking' | 'registered' | 'closing' | 'closed';
/**
 * `welcome`: the upgrade succeeded and the welcome went out; `close`: the gateway started a close
 * (a close frame sent, or the socket terminated); `closed`: the socket is gone; `kill`: killed
 * (its listener's drain deadline); `crash`: a fault in its handling ended it.
 */
export type ClientEvent = 'welcome' | 'close' | 'closed' | 'kill' | 'crash';

/** A hub client's life: the handshake (token, caps), registered (serving), closing, closed. */
export const clientProxyMachine = setup({ types: { events: {} as { type: ClientEvent } } }).createMachine({
  id: 'client-proxy',
  initial: 'handshaking',
  states: {
    handshaking: { on: { welcome: 'registered', close: 'closing', closed: 'closed', kill: 'closed', crash: 'closed' } },
    registered: { on: { close: 'closing', closed: 'closed', kill: 'closed', crash: 'closed' } },
    closing: { on: { closed: 'closed', kill: 'closed', crash: 'closed' } },
    closed: { type: 'final' },
  },
});
const machine = compile<ClientState, ClientEvent>(clientProxyMachine);

/** Keepalive: a client that has not answered a ping for this many sweeps (ping intervals) is terminated. */
export const MISSED_PONGS = 2;

/** What a listener shares with its clients: one object per listener settings version, not per client. */
export interface HubContext {
  shard: number;
  listener: ShardListener;
  hub: ShardHubSettings;
  table: StateTable;
  log: Logger;
  registry: Registry<ClientProxyActor>;
  post(m: HubFromShard): void;
  /** The listener's ready nodes (config order), as the main thread last said. */
  readyNodes(): readonly string[];
}

const kClient = Symbol('gatehouse.hub.client');
type Owned<T> = T & { [kClient]: ClientProxyActor };
type ConnOutcome = 'ok' | 'timeout' | 'error' | 'over_limit';
/** A socket or WebSocket event handler shared by every client (`this` is the emitter, which points back to its client). */
type Handler<A, B> = (this: Owned<object>, a: A, b: B) => void;

/**
 * One hub client: see the module comment. Created by the listener on the upgrade request in state
 * `handshaking`, registered when the listener hands it its WebSocket ({@link accept}); every exit
 * after that posts exactly one `hub-client-down`.
 *
 * @example
 * const c = new ClientProxyActor(ctx, socket);      // handshaking, holding the raw socket
 * c.accept(ws, 'u1');                               // welcome, hub-client-up
 * c.deliver('{"type":"message","from":"n1","data":1}');
 */
export class ClientProxyActor extends ClientFrames {
  readonly clientId: string;
  /** The listener's place taken for this client (maxConnections): given back when it ends. */
  holdsPlace = false;
  /** The per-IP place (`ipKey`) it holds, 0: none. */
  ipKey = 0;
  /** The per-user place (`hash32(userId)`) it holds, 0: none. */
  userKey = 0;
  #state: ClientState = machine.initial;
  #ctx: HubContext;
  readonly #socket: Owned<net.Socket>;
  #ws: Owned<WebSocket> | undefined;
  #log: Logger | undefined;
  #awaitingPong = false;
  #missed = 0;
  #up = false;
  #downPosted = false;
  #outcome: ConnOutcome = 'ok';
  /** A fault armed by {@link crash}: thrown from inside the client's next socket handler. */
  #injected: unknown;
  /** Why the client crashed, for its DOWN. */
  #error: unknown;
  /** The client's address, read once (each read is a getpeername()). */
  readonly remoteAddress: string | undefined;

  constructor(ctx: HubContext, socket: net.Socket) {
    const clientId = newClientId(ctx.shard);
    super(`client:${clientId}`, 'client-proxy', ctx.hub.clientRateLimit.burst);
    this.clientId = clientId;
    this.#ctx = ctx;
    this.#socket = socket as Owned<net.Socket>;
    this.#socket[kClient] = this;
    this.remoteAddress = socket.remoteAddress;
    socket.on('error', ClientProxyActor.#onRawError);
    socket.on('close', ClientProxyActor.#onRawClose);
    this.markRunning();
  }

  get state(): string {
    return this.#state;
  }

  override describe(): Record<string, unknown> {
    return { user: this.userId, nodes: this.nodes, queued: this.queued, peer: `${this.#socket.remoteAddress}:${this.#socket.remotePort}`, ...(isTls(this.#socket) && { tls: tlsInfo(this.#socket) }) };
  }

  protected get ctx(): HubContext {
    return this.#ctx;
  }

  protected get ws(): WebSocket | undefined {
    return this.#ws;
  }

  protected reindex(): void {
    this.#ctx.registry.register(this, this);
  }

  protected get logger(): Logger {
    // ctx.log binds the listener only: actorId and actorType appear once in each line.
    return (this.#log ??= this.#ctx.log.child({ actorId: this.id, actorType: this.type, clientId: this.clientId, userId: this.userId, remoteAddress: this.remoteAddress }));
  }

  #step(ev: ClientEvent): void {
    const was = this.#state;
    const next = stepMachine(machine, this, was, ev);
    if (next === undefined) return;
    this.#state = next;
    if (was === 'registered') this.#postDown();
    if (next === 'closed') this.#finish(ev === 'kill' ? 'killed' : ev === 'crash' ? 'error' : this.status === 'stopping' ? 'shutdown' : 'normal');
  }

  /**
   * Wraps a handler shared by every client: a throw inside it (a bug, or a fault armed by
   * {@link crash}) ends this client with DOWN `error`, never the shard. Fixed arity, no closure
   * per call: it runs per frame.
   */
  static #guard<A, B>(fn: Handler<A, B>): (this: object, a: A, b: B) => void {
    return function (this: object, a: A, b: B): void {
      const c = (this as Owned<object>)[kClient];
      try {
        if (c.#injected !== undefined) c.#raise();
        fn.call(this as Owned<object>, a, b);
      } catch (err) {
        c.fail(err);
      }
    };
  }

  #raise(): never {
    const err = this.#injected;
    this.#injected = undefined;
    throw err;
  }

  // ---- handshake ---------------------------------------------------------------------------

  static #onRawError = ClientProxyActor.#guard(function (this: Owned<object>, err: Error) {
    (this[kClient] as ClientProxyActor).logger.debug({ err }, 'hub handshake socket error');
    (this as Owned<net.Socket>).destroy();
  });

  static #onRawClose = ClientProxyActor.#guard(function (this: Owned<object>) {
    const c = this[kClient];
    if (c.#ws === undefined) c.#step('closed');
  });

  /** Still waiting for its token check and caps (the listener checks before going on after an await). */
  get handshaking(): boolean {
    return this.#state === 'handshaking' && !this.#socket.destroyed;
  }

  /** Refuses the upgrade with an HTTP error; the actor ends when the socket closes. */
  reject(status: number, body: Record<string, unknown>, outcome: ConnOutcome, headers?: Record<string, string>): void {
    if (this.#state !== 'handshaking') return;
    this.#outcome = outcome;
    this.#step('close');
    rejectUpgrade(this.#socket, status, body, headers);
  }

  /** Announces this registered client again (`hub-client-up`) after the main thread's presence restarted. */
  announce(): boolean {
    if (this.#state !== 'registered') return false;
    this.#ctx.post({ type: 'hub-client-up', listener: this.#ctx.listener.name, clientId: this.clientId, userId: this.userId! });
    return true;
  }

  /**
   * The upgrade went through: takes the WebSocket, registers under its user, sends `welcome`
   * (with the user's history position, message recovery), then posts `hub-client-up`.
   */
  accept(ws: WebSocket, userId: string, history?: HistoryPosition): void {
    if (this.#state !== 'handshaking') {
      ws.terminate();
      return;
    }
    const s = this.#socket;
    s.off('error', ClientProxyActor.#onRawError);
    s.off('close', ClientProxyActor.#onRawClose);
    const w = ws as Owned<WebSocket>;
    w[kClient] = this;
    this.#ws = w;
    this.userId = userId;
    this.#log = undefined;
    w.on('message', ClientProxyActor.#onMessage);
    w.on('close', ClientProxyActor.#onClose);
    w.on('error', ClientProxyActor.#onError);
    w.on('pong', ClientProxyActor.#onPong);
    s.on('drain', ClientProxyActor.#onDrain);
    this.startRate();
    this.#step('welcome');
    // In the user index before anyone hears of it: a push reacting to hub-client-up finds it.
    this.#ctx.registry.register(this, this);
    this.enqueue({ f: welcomeFrame(this.clientId, userId, history) });
    this.#up = true;
    this.#ctx.post({ type: 'hub-client-up', listener: this.#ctx.listener.name, clientId: this.clientId, userId });
  }

  // ---- socket events (shared handlers: `this` is the socket, which points back to its client) --

  static #onMessage = ClientProxyActor.#guard(function (this: Owned<object>, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) {
    this[kClient].onFrame(data, isBinary);
  });

  static #onClose = ClientProxyActor.#guard(function (this: Owned<object>) {
    this[kClient].#step('closed');
  });

  static #onError = ClientProxyActor.#guard(function (this: Owned<object>, err: Error & { code?: string }) {
    const c = this[kClient];
    const { table, shard, listener } = c.#ctx;
    // ws has already started the close (1009, 1002, 1007) or the socket is gone; count and log.
    if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
      table.listenerAdd(shard, listener.slot, L.HUB_DROP_OVERSIZE, 1);
      c.logger.info({ maxMessageSize: c.#ctx.hub.maxMessageSize }, 'hub client frame over maxMessageSize: closed (1009)');
    } else if (err.code?.startsWith('WS_ERR_')) {
      table.listenerAdd(shard, listener.slot, L.HUB_DROP_BAD, 1);
      c.logger.info({ err: err.message, code: err.code }, 'hub client protocol error: closed');
    } else {
      c.logger.debug({ err }, 'hub client socket error');
    }
    c.#step('close');
  });

  static #onPong = ClientProxyActor.#guard(function (this: Owned<object>) {
    const c = this[kClient];
    c.#awaitingPong = false;
    c.#missed = 0;
  });

  static #onDrain = ClientProxyActor.#guard(function (this: Owned<object>) {
    this[kClient].flush();
  });

  // ---- keepalive and closing -------------------------------------------------------------------

  /**
   * The listener's keepalive sweep (one timer per listener, every `pingInterval`): pings a
   * registered client, and terminates one that left {@link MISSED_PONGS} pings unanswered. A
   * client still closing after two sweeps is terminated too.
   */
  heartbeat(): void {
    if (this.#state === 'registered') {
      if (this.#awaitingPong && ++this.#missed >= MISSED_PONGS) {
        this.#outcome = 'timeout';
        this.logger.info({ pingIntervalMs: this.#ctx.hub.pingIntervalMs }, 'hub client ping timeout: terminated');
        this.#terminate();
        return;
      }
      this.#awaitingPong = true;
      this.#ws!.ping();
    } else if (this.#state === 'closing' && this.#ws && ++this.#missed >= MISSED_PONGS) {
      this.#ws.terminate();
    }
  }

  /** Starts a close with a code (1003, 1008, 1013...): the client leaves `registered` at once. */
  close(code: number, reason: string): void {
    if (this.#state !== 'registered') return;
    this.dropQueue();
    this.#missed = 0;
    this.#step('close');
    this.#ws!.close(code, reason);
  }

  #terminate(): void {
    this.dropQueue();
    this.#step('close');
    this.#ws?.terminate();
  }

  /**
   * Ends the client now because its handling failed (a throw in one of its handlers, or while it
   * was admitted): logs at error, releases its socket, counts outcome `error` and exits with reason
   * `error`; its registry entries and places go with its DOWN.
   */
  fail(err: unknown): void {
    if (this.status === 'exited') return;
    this.logger.error({ err }, 'hub client crashed');
    this.#outcome = 'error';
    this.#error = err;
    if (this.#state === 'closed') {
      // The throw came from its own ending: it is gone all the same.
      this.exit('error', err);
      return;
    }
    this.#release();
    this.#step('crash');
  }

  /**
   * Fault injection (`POST /debug/actors/:id/crash`, debug mode): `err` is thrown from inside the
   * client's next socket handler (a frame, a pong, a drain, a close), where the handler guard ends
   * this client alone. A registered client is pinged at once, so an idle one's pong delivers it; a
   * client still handshaking fails at once.
   */
  crash(err: unknown): boolean {
    if (this.status === 'exited') return false;
    if (this.#state !== 'registered') {
      this.fail(err);
      return true;
    }
    this.#injected = err;
    this.#ws!.ping();
    return true;
  }

  #release(): void {
    this.dropQueue();
    if (this.#ws) this.#ws.terminate();
    else this.#socket.destroy();
  }

  #postDown(): void {
    if (!this.#up || this.#downPosted) return;
    this.#downPosted = true;
    this.#ctx.post({ type: 'hub-client-down', listener: this.#ctx.listener.name, clientId: this.clientId, userId: this.userId! });
  }

  #finish(reason: 'normal' | 'shutdown' | 'killed' | 'error'): void {
    if (this.status === 'exited') return;
    this.#postDown();
    const { table, shard, listener } = this.#ctx;
    const slot = listener.slot;
    table.bytesAdd(shard, slot, this.#socket.bytesRead, this.#socket.bytesWritten);
    table.listenerAdd(shard, slot, L.ACTIVE, -1);
    if (this.holdsPlace) table.listenerRelease(slot);
    if (this.ipKey !== 0) table.ipRelease(slot, shard, this.ipKey);
    if (this.userKey !== 0) table.ipRelease(slot, shard, this.userKey);
    this.holdsPlace = false;
    this.ipKey = 0;
    this.userKey = 0;
    table.listenerAdd(shard, slot, OUTCOMES[this.#outcome]!, 1);
    this.exit(reason, reason === 'error' ? this.#error : undefined);
  }

  /** Graceful stop: a client is served until the listener's drain deadline, like a TCP connection. */
  protected requestStop(): boolean {
    return true;
  }

  /** Kill: a going-away close frame when the socket takes it, then the socket is destroyed. */
  protected forceStop(): void {
    if (this.#state === 'closed') return;
    if (this.#ws && this.#state === 'registered') {
      try {
        this.#ws.close(1001, 'going away');
      } catch {
        // the socket is gone already
      }
    }
    this.#release();
    this.#step('kill');
  }
}
