import http from 'node:http';
import net from 'node:net';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { IP, type StateTable } from '../workers/state-table.ts';
import type { ShardHubSettings, ShardListener } from '../workers/shard-config.ts';
import { bearerChallenge, createJwtVerifier, bearerToken, TokenError, type JwtVerifier } from '../auth/jwt.ts';
import { hash32, type HubFromShard, type HubTarget } from '../hub/messages.ts';
import type { HistoryPosition } from '../hub/frames.ts';
import type { Refusal } from '../net/listener-limits.ts';
import { ListenerBase } from './listener-base.ts';
import { rejectUpgrade } from '../net/reject-upgrade.ts';
import { ClientProxyActor, type HubContext } from './client-proxy.ts';
import { clientCommonName, isTls } from '../tls/listener-tls.ts';

/** On a TLS hub listener's plain server: the HTTP server its TLS sockets go to. */
const kHttp = Symbol('gatehouse.hubHttp');

/** A WebSocket closing handshake gets this long before ws destroys the socket. */
export const CLOSE_TIMEOUT_MS = 5_000;
/** Cluster mode: how long an admission waits for the main thread's answer (Redis) before the local cap alone decides. */
export const CLUSTER_ADMIT_WAIT_MS = 2_000;
const WS_KEY = /^[+/0-9A-Za-z]{22}==$/;

export interface HubListenerOptions {
  shard: number;
  listener: ShardListener;
  table: StateTable;
  log: Logger;
  /** Bind with SO_REUSEPORT, so every shard can bind the same address. */
  reusePort: boolean;
  /** Posts a message to the main thread (the shard's port). */
  post(m: HubFromShard): void;
  /** The listener's ready nodes, as the main thread last said (kept by the shard across incarnations). */
  readyNodes(): readonly string[];
}

/** How each listener-limit refusal is answered to a WebSocket client. */
const REFUSED: Record<Refusal, { status: number; body: Record<string, unknown>; headers?: Record<string, string> }> = {
  rate_limited: { status: 429, body: { error: 'rate_limited' }, headers: { 'Retry-After': '1' } },
  over_limit: { status: 503, body: { error: 'over_limit', message: 'too many connections' } },
  per_ip: { status: 429, body: { error: 'over_limit', message: 'too many connections from this address' } },
};

/**
 * A `protocol: hub` listener on one shard (`listener:<name>`, type `listener`): an HTTP server
 * whose upgrade requests on `path` become {@link ClientProxyActor}s after their JWT and the caps
 * (maxConnections, rateLimit, maxConnectionsPerIp, maxClientsPerUser, all held across shards in
 * the state table). Its clients live in a {@link Registry} indexed by `user` and `node`, and leave
 * it by their DOWN. One keepalive timer per listener pings every client each `pingInterval`. The
 * lifecycle, limits, drain and kill are {@link ListenerBase}'s.
 *
 * @example
 * const l = await new HubListenerActor(opts).start(); // resolves once bound
 * l.deliver({ kind: 'user', userId: 'u1' }, frame);  // number of clients it was queued to
 * l.stopAccepting(); await l.shutdown(30_000);        // drain, then kill what is left
 */
export class HubListenerActor extends ListenerBase<ClientProxyActor> {
  readonly #opts: HubListenerOptions;
  #ctx: HubContext;
  #wss: WebSocketServer;
  /** Undefined: no `auth.jwt`, the verified client certificate's CN is the user id. */
  #verifier: JwtVerifier | undefined;
  #jwtKey: string;
  /** Sockets fed to the unbound HTTP server (TLS or PROXY protocol) that have not upgraded yet. */
  readonly #fed = new Set<net.Socket>();
  #pingTimer: NodeJS.Timeout | undefined;
  #pingEvery = 0;
  #userFullWarned = false;
  /** Each client's socket (the one its WebSocket writes to), corked around a batch of broadcasts. */
  readonly #sockets = new WeakMap<ClientProxyActor, net.Socket>();
  /** Cluster mode: admissions waiting for `hub-admitted`, by client id. */
  readonly #admissions = new Map<string, { done: (ok: boolean, history?: HistoryPosition) => void; timer: NodeJS.Timeout }>();

  constructor(opts: HubListenerOptions) {
    super(opts, {
      name: `hub-clients:${opts.listener.name}`,
      indexes: {
        user: (c) => c.userId,
        node: (c) => (c.nodes.length > 0 ? c.nodes : undefined),
      },
    });
    this.#opts = opts;
    if (!opts.listener.hub) {
      const err = new TypeError(`listener ${opts.listener.name} has no hub settings`);
      this.exit('error', err);
      throw err;
    }
    this.#ctx = this.#context(opts.listener);
    try {
      // Throws JwtConfigError for a config that cannot verify anything: the listener fails to start.
      this.#verifier = opts.listener.hub.jwt && createJwtVerifier(opts.listener.hub.jwt);
    } catch (err) {
      this.exit('error', err);
      throw err;
    }
    this.#jwtKey = JSON.stringify(opts.listener.hub.jwt ?? null);
    this.#wss = newWss(opts.listener.hub);
  }

  /** The listener's clients (its connections): indexed by `user` and `node`. */
  get clients(): this['connections'] {
    return this.connections;
  }

  protected createServer(): net.Server {
    const server = http.createServer();
    if (this.config.tls || this.config.proxyProtocol) {
      // TLS or PROXY protocol: the base binds a plain server and reads the PROXY header or runs
      // the handshake first; each socket is then fed to this (unbound) HTTP server, whose
      // upgrade handler admits the client as usual.
      const plain = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }) as net.Server & { [kHttp]?: http.Server };
      plain[kHttp] = server;
      this.attachHandlers(server);
      return plain;
    }
    this.attachHandlers(server);
    return server;
  }

  /** The upgrade, request and error handlers of the hub's HTTP server (called from the base constructor: no private members yet). */
  protected attachHandlers(server: http.Server): void {
    // Each entry point is guarded: a throw ends that one request's socket, never the shard.
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      // An upgrading socket belongs to its client from here (it drains with it).
      this.#fed.delete(socket);
      try {
        this.#upgrade(req, socket, head);
      } catch (err) {
        this.contain(err, socket);
      }
    });
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      try {
        plainRequest(req, res);
      } catch (err) {
        this.contain(err, req.socket);
      }
    });
    server.on('clientError', (err: Error, socket: net.Socket) => {
      this.log.debug({ err }, 'hub listener: bad HTTP request');
      if (socket.writable) rejectUpgrade(socket, 400, { error: 'bad_request' });
      else socket.destroy();
    });
  }

  /** The HTTP parser owns each accepted socket: hub clients are admitted per upgrade request ({@link #upgrade}). */
  protected override onSocket(socket: net.Socket): void {
    // Without TLS nor PROXY protocol the HTTP server owns the socket already.
    if (this.tls) this.wrapTls(socket);
    else if (this.config.proxyProtocol) this.onAdmitted(socket);
  }

  /** A TLS client after its handshake: to the HTTP server (an upgrade then admits it). */
  protected override onAdmitted(socket: net.Socket): void {
    // Bytes read past a PROXY protocol header wait in the socket's stream buffer; node:http would
    // read the handle directly (past that buffer) unless the handle counts as consumed already.
    const handle = (socket as net.Socket & { _handle?: { _consumed?: boolean } | null })._handle;
    if (socket.readableLength > 0 && handle) handle._consumed = true;
    this.#fed.add(socket);
    socket.once('close', () => this.#fed.delete(socket));
    this.#httpServer().emit('connection', socket);
    // Paused by the PROXY header read: node:http only attaches its listeners.
    socket.resume();
  }

  protected refuse(socket: net.Socket, reason: Refusal): void {
    const r = REFUSED[reason];
    rejectUpgrade(socket, r.status, r.body, r.headers);
  }

  #context(listener: ShardListener): HubContext {
    return {
      shard: this.#opts.shard,
      listener,
      hub: listener.hub!,
      table: this.#opts.table,
      log: this.connectionLog,
      registry: this.connections,
      post: this.#opts.post,
      readyNodes: this.#opts.readyNodes,
    };
  }

  override describe(): Record<string, unknown> {
    return { protocol: 'hub', ...super.describe(), path: this.#ctx.hub.path, clients: this.connections.size, readyNodes: this.#opts.readyNodes() };
  }

  protected override onListening(): void {
    this.#armKeepalive();
  }

  /** The HTTP server: the bound one, or the unbound one a TLS or PROXY protocol listener feeds. */
  #httpServer(): http.Server {
    const s = this.server as net.Server & { [kHttp]?: http.Server };
    return s[kHttp] ?? (s as http.Server);
  }

  protected override onDraining(): void {
    this.#httpServer().closeIdleConnections();
    // An unbound HTTP server tracks no connections of its own (node:http does from listen on):
    // the sockets fed to it that have not upgraded are closed here.
    for (const s of this.#fed) if (s.readableLength === 0) s.destroy();
  }

  protected override onClosed(): void {
    clearInterval(this.#pingTimer);
    this.#pingTimer = undefined;
    // Their clients are closed with the listener.
    for (const a of this.#admissions.values()) clearTimeout(a.timer);
    this.#admissions.clear();
    this.#httpServer().closeAllConnections();
    for (const s of this.#fed) s.destroy();
    this.#fed.clear();
  }

  /** One timer for every client of the listener: a sweep each ping interval. */
  #armKeepalive(): void {
    const every = this.#ctx.hub.pingIntervalMs;
    if (this.#pingTimer && every === this.#pingEvery) return;
    clearInterval(this.#pingTimer);
    this.#pingEvery = every;
    this.#pingTimer = every > 0 ? setInterval(() => this.#sweep(), every) : undefined;
  }

  #sweep(): void {
    for (const { value } of this.connections.values()) value.heartbeat();
  }

  // ---- accepting -------------------------------------------------------------------------------

  #upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const ctx = this.#ctx;
    socket.on('error', noop);
    if (!this.accepting) {
      rejectUpgrade(socket, 503, { error: 'unavailable', message: 'the listener is draining' });
      return;
    }
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://hub');
    } catch {
      rejectUpgrade(socket, 400, { error: 'bad_request', message: 'bad request target' });
      return;
    }
    if (url.pathname !== ctx.hub.path) {
      rejectUpgrade(socket, 404, { error: 'not_found' });
      return;
    }
    const bad = badUpgrade(req);
    if (bad) {
      rejectUpgrade(socket, 400, { error: 'bad_request', message: bad }, bad.includes('Version') ? { 'Sec-WebSocket-Version': '13, 8' } : {});
      return;
    }
    // Listener-wide limits hold across shards (the same cells as a TCP listener's).
    const ipKey = this.admit(socket);
    if (ipKey === undefined) return;
    socket.off('error', noop);
    const client = this.adopt(new ClientProxyActor(ctx, socket));
    this.#sockets.set(client, socket);
    client.holdsPlace = true;
    client.ipKey = ipKey;
    // From here the client owns the socket and its places: a throw ends the client.
    try {
      this.#verify(client, ctx, req, url, socket, head);
    } catch (err) {
      client.fail(err);
    }
  }

  #verify(client: ClientProxyActor, ctx: HubContext, req: http.IncomingMessage, url: URL, socket: net.Socket, head: Buffer): void {
    const verifier = this.#verifier;
    if (verifier === undefined) {
      // Mutual TLS identifies the client: the handshake verified its certificate (clientAuth required).
      const cn = isTls(socket) ? clientCommonName(socket) : undefined;
      if (cn === undefined) return this.#unauthorized(client, new TokenError('missing_token', 'no verified client certificate with a CN'));
      return this.#admitUser(client, ctx, this.#wss, req, socket, head, cn);
    }
    const token = bearerToken(req.headers.authorization, url.searchParams);
    if (token === undefined) {
      this.#unauthorized(client, new TokenError('missing_token', 'no Authorization: Bearer header and no token parameter'));
      return;
    }
    const wss = this.#wss;
    verifier
      .verify(token)
      .then(
        ({ userId }) => this.#admitUser(client, ctx, wss, req, socket, head, userId),
        (err: unknown) => this.#unauthorized(client, err instanceof TokenError ? err : new TokenError('malformed', String(err))),
      )
      // A bug while admitting crashes this client, never the shard (an unhandled rejection would).
      .catch((err: unknown) => client.fail(err));
  }

  #unauthorized(client: ClientProxyActor, err: TokenError): void {
    if (!client.handshaking) return;
    this.refused(`token:${err.reason}`, 'hub client refused: bad or missing token', client.remoteAddress, { reason: err.reason }, 'info');
    client.reject(401, { error: 'unauthorized', reason: err.reason }, 'error', { 'WWW-Authenticate': bearerChallenge(err.reason) });
  }

  #admitUser(client: ClientProxyActor, ctx: HubContext, wss: WebSocketServer, req: http.IncomingMessage, socket: net.Socket, head: Buffer, userId: string): void {
    // The client left (or was killed) while its token was checked.
    if (!client.handshaking) return;
    const { table, shard } = ctx;
    const { slot } = ctx.listener;
    const max = ctx.hub.maxClientsPerUser;
    if (max > 0) {
      const key = hash32(userId);
      const r = table.ipAcquire(slot, shard, key, max);
      if (r === IP.REJECTED) return this.#tooMany(client, userId, max);
      if (r === IP.ADMITTED) client.userKey = key;
      else if (!this.#userFullWarned) {
        // The keyed table's stripe for this user is full (about 16,000 (user or IP, shard) pairs
        // per listener): the cap fails open for this client rather than refusing everyone.
        this.#userFullWarned = true;
        this.log.warn({ maxClientsPerUser: max }, 'per-user table full: a client was admitted without a per-user count (logged once)');
      }
      if (ctx.hub.cluster) return this.#askCluster(client, ctx, userId, max, (history) => wss.handleUpgrade(req, socket, head, (ws) => client.accept(ws, userId, history)));
    }
    wss.handleUpgrade(req, socket, head, (ws) => client.accept(ws, userId));
  }

  #tooMany(client: ClientProxyActor, userId: string, max: number): void {
    this.refused('per_user', 'maxClientsPerUser reached: hub client refused', client.remoteAddress, { userId, maxClientsPerUser: max }, 'info');
    client.reject(429, { error: 'too_many_clients', message: `user has ${max} clients already` }, 'over_limit', { 'Retry-After': '1' });
  }

  /**
   * Cluster mode: the main thread checks `maxClientsPerUser` across instances (one Redis round
   * trip). No answer within {@link CLUSTER_ADMIT_WAIT_MS}: the local cap, passed already, decides.
   */
  #askCluster(client: ClientProxyActor, ctx: HubContext, userId: string, max: number, upgrade: (history?: HistoryPosition) => void): void {
    const clientId = client.clientId;
    const done = (ok: boolean, history?: HistoryPosition): void => {
      clearTimeout(timer);
      if (this.#admissions.get(clientId)?.done !== done) return;
      this.#admissions.delete(clientId);
      if (!client.handshaking) return;
      if (ok) upgrade(history);
      else this.#tooMany(client, userId, max);
    };
    const timer = setTimeout(() => done(true), CLUSTER_ADMIT_WAIT_MS);
    this.#admissions.set(clientId, { done, timer });
    this.#opts.post({ type: 'hub-admit', listener: ctx.listener.name, clientId, userId });
  }

  /** Cluster mode: the main thread's answer to an admission (with the user's history position, for its welcome). */
  admitted(clientId: string, ok: boolean, history?: HistoryPosition): void {
    this.#admissions.get(clientId)?.done(ok, history);
  }

  // ---- routing (HubToShard) --------------------------------------------------------------------

  /** Queues a node's frame to its target's clients here; returns how many live clients took it. */
  deliver(to: HubTarget, frame: string): number {
    const clients = this.connections;
    let n = 0;
    switch (to.kind) {
      case 'client': {
        const e = clients.get(`client:${to.clientId}`);
        if (e && e.value.deliver(frame)) n++;
        break;
      }
      case 'user': {
        // Encoded once for all of the user's clients (ws would encode a string once per send).
        const bytes = clients.count('user', to.userId) > 1 ? Buffer.from(frame) : frame;
        clients.forEachIn('user', to.userId, (c) => {
          if (c.deliver(bytes)) n++;
        });
        break;
      }
      case 'all': {
        const bytes = clients.size > 1 ? Buffer.from(frame) : frame;
        clients.forEach((c) => {
          if (c.deliver(bytes)) n++;
        });
        break;
      }
    }
    return n;
  }

  /**
   * Several broadcasts, in order, to every client here; returns how many live clients took each.
   * Each client's socket is corked meanwhile, so that all of them leave in one write per client
   * rather than one per frame (the write is most of a delivery's cost).
   */
  broadcast(frames: readonly string[]): number[] {
    const bytes = frames.map((f) => Buffer.from(f));
    const n = frames.map(() => 0);
    this.connections.forEach((c) => {
      const socket = this.#sockets.get(c);
      socket?.cork();
      for (let j = 0; j < bytes.length; j++) if (c.deliver(bytes[j]!)) n[j]!++;
      socket?.uncork();
    });
    return n;
  }

  /** Announces every registered client again (the main thread's presence restarted); returns how many. */
  resync(): number {
    let n = 0;
    this.connections.forEach((c) => {
      if (c.announce()) n++;
    });
    return n;
  }

  /** A frame for one client (a response, an error); dropped silently when the client is gone. */
  reply(clientId: string, frame: string): boolean {
    const e = this.connections.get(`client:${clientId}`);
    return e !== undefined && e.value.deliver(frame);
  }

  /** A node went down: its bound clients get `node-down` and lose the binding. */
  nodeDown(node: string): number {
    let n = 0;
    for (const { value } of this.connections.lookup('node', node)) if (value.nodeDown(node)) n++;
    return n;
  }

  /**
   * Applies a reloaded config that keeps the address: limits, token settings, message size, send
   * queue and ping interval apply to clients that connect from now on (the ping interval to
   * every client). Open clients keep the rest of theirs. Throws `GH_ERR_JWT_CONFIG` (and changes
   * nothing) when the new token settings cannot verify anything.
   */
  reconfigure(listener: ShardListener): void {
    const hub = listener.hub;
    if (!hub) throw new TypeError(`listener ${listener.name} has no hub settings`);
    const jwtKey = JSON.stringify(hub.jwt ?? null);
    const verifier = jwtKey === this.#jwtKey ? this.#verifier : hub.jwt && createJwtVerifier(hub.jwt);
    this.#verifier = verifier;
    this.#jwtKey = jwtKey;
    this.#opts.listener = listener;
    this.#ctx = this.#context(listener);
    this.#wss = newWss(hub);
    this.configure(listener);
    if (this.accepting) this.#armKeepalive();
  }
}

/** A plain HTTP request to a WebSocket endpoint: 426. */
function plainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  const body = JSON.stringify({ error: 'upgrade_required', message: 'this is a WebSocket endpoint' });
  res.writeHead(426, { Upgrade: 'websocket', Connection: 'close', 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
  req.resume();
}

function newWss(hub: ShardHubSettings): WebSocketServer {
  return new WebSocketServer({
    noServer: true,
    clientTracking: false,
    maxPayload: hub.maxMessageSize,
    perMessageDeflate: false,
    closeTimeout: CLOSE_TIMEOUT_MS,
  } as ConstructorParameters<typeof WebSocketServer>[0]);
}

/** Why an upgrade request is not a WebSocket handshake we take (400), or undefined. */
function badUpgrade(req: http.IncomingMessage): string | undefined {
  if (req.method !== 'GET') return 'a WebSocket handshake is a GET';
  if (req.headers.upgrade?.toLowerCase() !== 'websocket') return 'Upgrade must be websocket';
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !WS_KEY.test(key.trim())) return 'missing or invalid Sec-WebSocket-Key header';
  const version = Number(req.headers['sec-websocket-version']);
  if (version !== 13 && version !== 8) return 'missing or invalid Sec-WebSocket-Version header';
  return undefined;
}

function noop(): void {}
