import type net from 'node:net';
import type tls from 'node:tls';
import { setup } from 'xstate';
import type { Logger } from 'pino';
import { Actor } from '../runtime/actor.ts';
import { compile, stepMachine } from '../runtime/compiled-machine.ts';
import { DenseSet } from '../runtime/dense-set.ts';
import { Registry, type IndexFn } from '../runtime/registry.ts';
import { bindServer } from '../net/bind.ts';
import { acceptThroughOnread, type ReadCallback } from '../net/adopt-socket.ts';
import { rawSocketsAvailable, type RawSocket } from '../net/raw-socket.ts';
import { ListenerLimits, type Refusal } from '../net/listener-limits.ts';
import { L, type StateTable } from '../workers/state-table.ts';
import type { ShardListener } from '../workers/shard-config.ts';
import { ListenerTls } from '../tls/listener-tls.ts';
import { inheritProxyAddress, readProxyHeader } from '../net/proxy-reader.ts';
import { compileCidrs, unmapAddress, type CidrMatcher } from '../http/middleware/ip.ts';

export type ListenerState = 'binding' | 'listening' | 'paused' | 'draining' | 'closed';
export type ListenerEvent = 'bound' | 'pause' | 'resume' | 'drain' | 'closed';

/**
 * Every listener's lifecycle: bound on its shard, then draining (no new connections), then
 * closed. `paused` (`POST /drain`) stops accepting like a drain but can go back to listening
 * (`POST /undrain`): open connections are served meanwhile.
 */
export const listenerMachine = setup({ types: { events: {} as { type: ListenerEvent } } }).createMachine({
  id: 'listener',
  initial: 'binding',
  states: {
    binding: { on: { bound: 'listening', drain: 'draining', closed: 'closed' } },
    listening: { on: { pause: 'paused', drain: 'draining', closed: 'closed' } },
    paused: { on: { resume: 'listening', drain: 'draining', closed: 'closed' } },
    draining: { on: { closed: 'closed' } },
    closed: { type: 'final' },
  },
});
const table = compile<ListenerState, ListenerEvent>(listenerMachine);

/** How long a new connection on a `proxyProtocol` listener has to send its header. */
const PROXY_HEADER_TIMEOUT_MS = 5_000;
const noop = (): void => {};

/** The "per-IP key" of a TLS handshake that holds no listener places (the hub's: it admits per upgrade). */
const NO_PLACES = -1;

/** Refusal lines of one kind are logged at info or warn at most this often, with a count; debug in between. */
const REFUSAL_LOG_EVERY_MS = 1_000;

/** What every listener is made from, whatever its protocol. */
export interface ListenerBaseOptions {
  shard: number;
  listener: ShardListener;
  table: StateTable;
  /** The shard's logger: the listener binds `listener`, then its own `actorId` and `actorType`. */
  log: Logger;
  /** Bind with SO_REUSEPORT, so every shard can bind the same address. */
  reusePort: boolean;
}

/** The log line of each listener-limit refusal, and the settings it names. */
const LIMIT_REFUSALS: Record<Refusal, { msg: string; fields(l: ShardListener): Record<string, unknown> }> = {
  rate_limited: { msg: 'rate limit: new connections rejected', fields: (l) => ({ perSecond: l.rateLimit?.perSecond, burst: l.rateLimit?.burst }) },
  over_limit: { msg: 'maxConnections reached: connection refused', fields: (l) => ({ maxConnections: l.maxConnections }) },
  per_ip: { msg: 'maxConnectionsPerIp reached: connection refused', fields: (l) => ({ maxConnectionsPerIp: l.maxConnectionsPerIp }) },
};

/**
 * The part of a listener that does not depend on its protocol: the lifecycle machine
 * ({@link listenerMachine}), the bind (`reusePort`), the connections' {@link Registry} (OTP
 * `simple_one_for_one`: connections leave it by their own DOWN), the limits held across shards,
 * refusal logging, and the two-phase stop (drain: exit when the last connection's DOWN arrives;
 * kill: kill every connection, close).
 *
 * A protocol extends it with two things: {@link createServer} (the server to bind, with its own
 * request or upgrade handlers) and {@link onSocket} (what to do with each accepted socket). It
 * takes a connection in with {@link admit} (limits; a refusal is answered by {@link refuse} and
 * logged), then {@link adopt} (counted, registered under this listener). A throw while a socket is
 * being taken in goes to {@link contain}, which ends that socket alone: the shard goes on.
 *
 * @example
 * class EchoListener extends ListenerBase<EchoActor> {
 *   protected createServer() { return net.createServer({ pauseOnConnect: true }); }
 *   protected onSocket(s: net.Socket) { const k = this.admit(s); if (k !== undefined) this.adopt(new EchoActor(s, k)).start(); }
 *   protected refuse(s: net.Socket) { s.destroy(); }
 * }
 */
export abstract class ListenerBase<C extends Actor> extends Actor {
  #state: ListenerState = table.initial;
  #config: ShardListener;
  readonly #base: ListenerBaseOptions;
  readonly #server: net.Server;
  readonly #limits: ListenerLimits;
  #address: { host: string; port: number } | undefined;
  /** The per-IP key of a socket admitted but not yet adopted by a connection actor: a throw in between gives its places back. */
  #pending: number | undefined;
  readonly #refusals = new Map<string, { n: number; at: number }>();
  /** TLS termination (listener `tls`), when this listener's protocol has the base run it. */
  #tls: ListenerTls | undefined;
  /** Listener `proxyProtocol`: its trusted peers, compiled (a reload recompiles). */
  #proxyTrusted: CidrMatcher | undefined;
  /**
   * Sockets accepted but not yet a connection actor's: reading their PROXY header or in their
   * TLS handshake. No actor owns them, so the listener's close destroys them itself.
   */
  readonly #arriving = new DenseSet<net.Socket>();
  /** The listener's own log lines (`actorId` = this listener). */
  protected readonly log: Logger;
  /** For the connections: bound to the listener's name only, so each adds its own `actorId` once. */
  protected readonly connectionLog: Logger;
  /** This listener's live connections; each leaves by its DOWN. */
  readonly connections: Registry<C>;

  constructor(opts: ListenerBaseOptions, registry: { name: string; indexes?: Record<string, IndexFn<C>>; byId?: boolean }) {
    super(`listener:${opts.listener.name}`, 'listener');
    this.#base = opts;
    this.#config = opts.listener;
    this.connectionLog = opts.log.child({ listener: opts.listener.name });
    this.log = this.connectionLog.child({ actorId: this.id, actorType: this.type });
    this.connections = new Registry<C>(registry.name, registry.indexes, { byId: registry.byId });
    this.#limits = new ListenerLimits(opts.table, opts.shard, opts.listener, this.log);
    this.#server = this.createServer();
    if (opts.listener.tls) {
      this.#tls = new ListenerTls(
        opts.listener.name,
        opts.listener.tls,
        (s, ipKey) => this.#onSecure(s, ipKey),
        (ipKey, err, remoteAddress) => this.#handshakeFailed(ipKey, err, remoteAddress),
      );
    }
    if (opts.listener.proxyProtocol) this.#proxyTrusted = compileCidrs(opts.listener.proxyProtocol.trustedProxies);
    this.#server.on('connection', (s: net.Socket) => this.#onConnection(s));
    this.#server.on('error', (err) => this.log.error({ err }, 'listener error'));
  }

  // ---- what a protocol provides ----------------------------------------------------------------

  /**
   * The server to bind, with the protocol's own handlers on it. Called once by this constructor,
   * before the subclass's own fields exist: build the server and attach handlers, nothing more.
   */
  protected abstract createServer(): net.Server;
  /**
   * What to do with each socket the server accepted while listening. A throw ends this socket
   * (and gives back what {@link admit} took for it), never the listener.
   */
  protected onSocket(socket: net.Socket): void {
    const ipKey = this.admit(socket);
    if (ipKey === undefined) return;
    if (this.#tls !== undefined) {
      // The handshake holds the listener places until it ends: the actor's, or given back.
      this.#arrive(socket);
      this.#tls.wrap(socket, ipKey);
      this.#pending = undefined;
      return;
    }
    this.onAdmitted(socket, ipKey);
  }
  /**
   * An admitted connection (past the limits, and past the TLS handshake on a TLS listener: then
   * `socket` is the TLSSocket) for the protocol to {@link adopt}. A throw ends this socket alone.
   */
  protected onAdmitted(_socket: net.Socket, _ipKey: number): void {
    throw new Error(`${this.constructor.name} takes sockets in by its own onSocket`);
  }
  /** Answers a socket refused by the listener's limits (TCP: closed at once; hub: an HTTP status). */
  protected abstract refuse(socket: net.Socket, reason: Refusal): void;
  /**
   * The `onread` callback that plain accepted sockets are created with (see
   * `acceptThroughOnread`), or undefined to accept them as Node does ('data' events).
   */
  protected acceptReads(): ReadCallback | undefined {
    return undefined;
  }
  /**
   * Whether plain accepted sockets may be {@link RawSocket}s (no `net.Socket`; see
   * net/raw-socket.ts): the protocol handles one wherever it handles a socket.
   */
  protected acceptsRawSockets(): boolean {
    return false;
  }
  /** Called once bound, before the listener reports running (timers and the like). */
  protected onListening(): void {}
  /** Called when the listener stops accepting (the drain's first step). */
  protected onDraining(): void {}
  /** Called when a paused listener accepts again (`POST /undrain`): undo what {@link onDraining} set. */
  protected onResumed(): void {}
  /** Called once when the listener closes: release what {@link onListening} armed. */
  protected onClosed(): void {}

  // ---- identity and inspection -----------------------------------------------------------------

  get state(): string {
    return this.#state;
  }

  get address(): { host: string; port: number } | undefined {
    return this.#address;
  }

  /** The listener's configured name (its id is `listener:NAME`). */
  get name(): string {
    return this.#config.name;
  }

  /** The listener's current settings (a reload replaces them through {@link configure}). */
  protected get config(): ShardListener {
    return this.#config;
  }

  protected get shard(): number {
    return this.#base.shard;
  }

  protected get table(): StateTable {
    return this.#base.table;
  }

  protected get server(): net.Server {
    return this.#server;
  }

  override children(): Iterable<Actor> {
    const out: Actor[] = [];
    for (const { actor } of this.connections.values()) out.push(actor);
    return out;
  }

  override describe(): Record<string, unknown> {
    const a = this.#address;
    const d: Record<string, unknown> = { listen: a && `${a.host}:${a.port}`, registry: this.connections.sizes() };
    if (this.#tls) d.tls = this.#tls.describe();
    if (this.#config.maxConnectionsPerIp > 0) d.perIpUntracked = this.#base.table.ipUntracked(this.#config.slot);
    return d;
  }

  #step(ev: ListenerEvent): void {
    const next = stepMachine(table, this, this.#state, ev);
    if (next !== undefined) this.#state = next;
  }

  /** Binds the listening socket. Rejects with `GH_ERR_LISTEN`. */
  async start(): Promise<this> {
    const { host, port, name } = this.#config;
    try {
      this.#address = await bindServer(this.#server, name, host, port, this.#base.reusePort);
    } catch (err) {
      this.exit('error', (err as Error).cause ?? err);
      throw err;
    }
    this.#step('bound');
    this.#acceptThroughOnread();
    this.onListening();
    this.markRunning();
    // Which sockets plain connections get: `raw` (net/raw-socket.ts) or Node's `net.Socket`.
    const sockets = this.acceptsRawSockets() ? (rawSocketsAvailable() ? 'raw' : 'net') : undefined;
    this.log.info({ address: `${this.#address.host}:${this.#address.port}`, ...(sockets && { sockets }) }, 'listening');
    return this;
  }

  /**
   * Plain sockets read through `onread` from their accept, on the listening handle bound now; a
   * PROXY header or a TLS handshake is read the usual way first (decided per accept).
   */
  #acceptThroughOnread(): void {
    const onRead = this.acceptReads();
    if (onRead) acceptThroughOnread(this.#server, onRead, () => this.#tls === undefined && this.#config.proxyProtocol === undefined, this.acceptsRawSockets());
  }

  /** New settings from a reload: the limits apply to new connections (the rate limit keeps its bucket). */
  protected configure(listener: ShardListener): void {
    this.#config = listener;
    this.#limits.configure(listener);
    this.#proxyTrusted = listener.proxyProtocol ? compileCidrs(listener.proxyProtocol.trustedProxies) : undefined;
    // New certificates (a renewed file, a reload): used by handshakes from now on.
    if (listener.tls && this.#tls && listener.tls !== this.#tls.settings) this.#tls.update(listener.tls);
  }

  // ---- taking connections in -------------------------------------------------------------------

  #onConnection(socket: net.Socket): void {
    if (this.#state !== 'listening') {
      socket.destroy();
      return;
    }
    const pp = this.#config.proxyProtocol;
    if (pp !== undefined && this.#proxyTrusted !== undefined) return this.#readProxy(socket, pp, this.#proxyTrusted);
    this.#take(socket);
  }

  #take(socket: net.Socket): void {
    try {
      this.onSocket(socket);
    } catch (err) {
      this.contain(err, socket);
    }
  }

  /** PROXY protocol first: the header read (or plain traffic told apart), then the usual way in. */
  #readProxy(socket: net.Socket, pp: NonNullable<ShardListener['proxyProtocol']>, trusted: CidrMatcher): void {
    const peer = socket.remoteAddress;
    socket.on('error', noop); // until the protocol's own handlers are on
    this.#arrive(socket);
    readProxyHeader(
      socket,
      { accept: pp.accept, trusted: peer !== undefined && trusted.matches(unmapAddress(peer)), peekUntrusted: this.peeksForProxyHeaders, timeoutMs: PROXY_HEADER_TIMEOUT_MS },
      (r) => {
        socket.removeListener('error', noop);
        this.#arriving.delete(socket);
        if (r.ok) {
          if (this.#state !== 'listening') return void socket.destroy();
          return this.#take(socket);
        }
        socket.destroy();
        this.#base.table.listenerAdd(this.#base.shard, this.#config.slot, L.ERROR, 1);
        this.refused(`proxy_${r.reason}`, 'PROXY protocol: connection closed', peer, { reason: r.reason, detail: r.detail }, 'warn');
      },
    );
  }

  /**
   * Whether the first bytes of a peer outside `trustedProxies` are read to refuse a PROXY header
   * from it: yes where the client speaks first (http, hub); a tcp listener may carry a protocol
   * where the server speaks first, so its untrusted peers are served untouched.
   */
  protected get peeksForProxyHeaders(): boolean {
    return true;
  }

  /**
   * Runs the TLS handshake on a socket that took no listener places (the hub admits per upgrade
   * request, after it); {@link onAdmitted} gets the TLS socket.
   */
  protected wrapTls(socket: net.Socket): void {
    this.#arrive(socket);
    this.#tls!.wrap(socket, NO_PLACES);
  }

  /** Tracks a socket until an actor owns it (or it closes). */
  #arrive(socket: net.Socket): void {
    if (this.#arriving.has(socket)) return;
    this.#arriving.add(socket);
    socket.once('close', () => this.#arriving.delete(socket));
  }

  #onSecure(socket: tls.TLSSocket, ipKey: number): void {
    const raw = (socket as tls.TLSSocket & { _parent?: net.Socket })._parent;
    if (raw) this.#arriving.delete(raw);
    if (this.#state !== 'listening' && this.#state !== 'draining' && this.#state !== 'paused') {
      this.#handshakeFailed(ipKey, new Error('listener closed during the handshake'), socket.remoteAddress);
      socket.destroy();
      return;
    }
    if (ipKey !== NO_PLACES) this.#pending = ipKey;
    if (raw) inheritProxyAddress(raw, socket);
    try {
      this.onAdmitted(socket, ipKey);
    } catch (err) {
      this.contain(err, socket);
    }
  }

  /** A TLS handshake failed or timed out: the places it held are given back; logged at most once a second. */
  #handshakeFailed(ipKey: number, err: Error, remoteAddress: string | undefined): void {
    const { table: t, shard } = this.#base;
    const slot = this.#config.slot;
    if (ipKey !== NO_PLACES) {
      t.listenerRelease(slot);
      if (ipKey !== 0) t.ipRelease(slot, shard, ipKey);
    }
    const code = (err as NodeJS.ErrnoException).code;
    this.refused('tls_handshake', 'TLS handshake failed: connection closed', remoteAddress, { reason: code ?? err.message }, 'info');
  }

  /** The listener's TLS termination, if any (for describe and metrics). */
  protected get tls(): ListenerTls | undefined {
    return this.#tls;
  }

  /** Still taking new connections (not draining or closed). */
  protected get accepting(): boolean {
    return this.#state === 'listening';
  }

  /**
   * Checks a new connection against the listener-wide limits. Admitted: returns its per-IP key (0:
   * none), and the socket holds a listener place until {@link adopt} hands it to a connection.
   * Refused: answered with {@link refuse}, logged with its address, and `undefined`.
   */
  protected admit(socket: net.Socket): number | undefined {
    const a = this.#limits.admit(socket);
    if (a.ok) {
      this.#pending = a.ipKey;
      return a.ipKey;
    }
    const r = LIMIT_REFUSALS[a.reason];
    this.refused(a.reason, r.msg, socket.remoteAddress, r.fields(this.#config), 'warn');
    this.refuse(socket, a.reason);
    return undefined;
  }

  /** Takes an admitted connection's actor in: counted active, a child of this listener, in the registry. */
  protected adopt(conn: C): C {
    this.#pending = undefined;
    const { table: t, shard } = this.#base;
    t.listenerAdd(shard, this.#config.slot, L.ACTIVE, 1);
    conn.parent = this;
    this.connections.register(conn, conn);
    return conn;
  }

  /**
   * A throw while taking `socket` in (before a connection actor owned it): the socket is
   * destroyed, the places {@link admit} took are given back, the outcome `error` is counted and
   * logged. The listener and every other connection go on.
   */
  protected contain(err: unknown, socket: net.Socket): void {
    const key = this.#pending;
    this.#pending = undefined;
    const remoteAddress = socket.remoteAddress;
    socket.destroy();
    const { table: t, shard } = this.#base;
    const slot = this.#config.slot;
    if (key !== undefined) {
      t.listenerRelease(slot);
      if (key !== 0) t.ipRelease(slot, shard, key);
    }
    t.listenerAdd(shard, slot, L.ERROR, 1);
    this.log.error({ err, remoteAddress }, 'accepting a connection failed: connection closed');
  }

  /**
   * Logs a refused client: at debug each time, and at `level` at most once a second per `kind`,
   * with how many were refused since the last such line and the address (and `extra`, e.g. the
   * user) of the one refused now. Floods cost one line a second, and the line still names a client.
   */
  protected refused(kind: string, msg: string, remoteAddress: string | undefined, extra: Record<string, unknown> | undefined, level: 'info' | 'warn'): void {
    const now = Date.now();
    let r = this.#refusals.get(kind);
    if (!r) this.#refusals.set(kind, (r = { n: 0, at: 0 }));
    r.n++;
    if (now < r.at) {
      this.log.debug({ ...extra, kind, remoteAddress }, msg);
      return;
    }
    this.log[level]({ ...extra, kind, remoteAddress, refused: r.n }, msg);
    r.n = 0;
    r.at = now + REFUSAL_LOG_EVERY_MS;
  }

  // ---- stopping --------------------------------------------------------------------------------

  /**
   * Stops accepting for now (`POST /drain`): the listening socket closes, open connections go on
   * (HTTP keep-alive ones close after their current response). {@link resume} binds it again.
   */
  pause(): void {
    if (this.#state !== 'listening') return;
    this.#step('pause');
    this.#server.close();
    this.onDraining();
    this.log.info({ connections: this.connections.size }, 'paused: not accepting');
  }

  /** Binds the listening socket again after {@link pause}, on the same address. Rejects with `GH_ERR_LISTEN`. */
  async resume(): Promise<void> {
    if (this.#state !== 'paused') return;
    const a = this.#address ?? { host: this.#config.host, port: this.#config.port };
    await bindServer(this.#server, this.#config.name, a.host, a.port, this.#base.reusePort);
    // A drain that came during the bind wins.
    if (this.#state !== 'paused') {
      this.#server.close();
      return;
    }
    this.#acceptThroughOnread(); // a new listening handle
    this.#step('resume');
    this.onResumed();
    this.log.info({ address: `${a.host}:${a.port}` }, 'accepting again');
  }

  /** Stops accepting (the drain's first step); open connections go on. */
  stopAccepting(): void {
    if (this.#state === 'closed' || this.#state === 'draining') return;
    const wasListening = this.#state !== 'paused';
    this.#step('drain');
    if (wasListening) this.#server.close();
    this.onDraining();
    this.log.info({ connections: this.connections.size }, 'draining');
  }

  protected requestStop(): boolean {
    this.stopAccepting();
    if (this.connections.size === 0) {
      this.#close('shutdown');
      return true;
    }
    for (const { actor } of this.connections.values()) {
      actor.monitor(() => {
        // After the DOWN has reached every watcher: a connection that re-registered (a hub client's
        // new node binding) has its registry watcher behind this one, so its entry is only gone then.
        queueMicrotask(() => {
          if (this.connections.size === 0 && this.status === 'stopping') this.#close('shutdown');
        });
      });
    }
    return true;
  }

  protected forceStop(): void {
    this.stopAccepting();
    for (const { actor } of [...this.connections.values()]) actor.kill();
    this.#close('killed');
  }

  #close(reason: 'shutdown' | 'killed'): void {
    if (this.#state === 'closed') return;
    this.#server.close();
    // Handshakes and PROXY headers still in progress: no actor to drain them (their listener
    // places, if any, are given back by the handshake's failure).
    for (const s of this.#arriving.values()) s.destroy();
    this.#arriving.clear();
    this.onClosed();
    this.#step('closed');
    this.exit(reason);
  }
}
