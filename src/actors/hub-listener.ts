import http from 'node:http';
import type net from 'node:net';
import { setup } from 'xstate';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { Actor } from '../runtime/actor.ts';
import { compile } from '../runtime/compiled-machine.ts';
import { Registry } from '../runtime/registry.ts';
import { bindServer } from '../net/bind.ts';
import { IP, L, type StateTable } from '../workers/state-table.ts';
import type { ShardHubSettings, ShardListener } from '../workers/shard-config.ts';
import { createJwtVerifier, bearerToken, TokenError, type JwtVerifier } from '../hub/auth.ts';
import { hash32, type HubFromShard, type HubTarget } from '../hub/messages.ts';
import { ListenerLimits } from '../net/listener-limits.ts';
import { ClientProxyActor, rejectUpgrade, type HubContext } from './client-proxy.ts';

type ListenerState = 'binding' | 'listening' | 'draining' | 'closed';
type ListenerEvent = 'bound' | 'drain' | 'closed';

/** A hub listener's lifecycle: the same as a TCP listener's (bound, draining, closed). */
export const hubListenerMachine = setup({ types: { events: {} as { type: ListenerEvent } } }).createMachine({
  id: 'hub-listener',
  initial: 'binding',
  states: {
    binding: { on: { bound: 'listening', drain: 'draining', closed: 'closed' } },
    listening: { on: { drain: 'draining', closed: 'closed' } },
    draining: { on: { closed: 'closed' } },
    closed: { type: 'final' },
  },
});
const machine = compile<ListenerState, ListenerEvent>(hubListenerMachine);

/** A WebSocket closing handshake gets this long before ws destroys the socket. */
export const CLOSE_TIMEOUT_MS = 5_000;
/** Refused handshakes (bad tokens, caps) are logged at info at most once a second each kind, with a count. */
const REFUSAL_LOG_EVERY_MS = 1_000;
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

/**
 * A `protocol: hub` listener on one shard (`listener:<name>`, type `listener`): an HTTP server
 * whose upgrade requests on `path` become {@link ClientProxyActor}s after their JWT and the caps
 * (maxConnections, rateLimit, maxConnectionsPerIp, maxClientsPerUser, all held across shards in
 * the state table). Its clients live in a {@link Registry} indexed by `user` and `node`, and leave
 * it by their DOWN. One keepalive timer per listener pings every client each `pingInterval`.
 *
 * @example
 * const l = await new HubListenerActor(opts).start(); // resolves once bound
 * l.deliver({ kind: 'user', userId: 'u1' }, frame);  // number of clients it was queued to
 * l.stopAccepting(); await l.shutdown(30_000);        // drain, then kill what is left
 */
export class HubListenerActor extends Actor {
  #state: ListenerState = machine.initial;
  readonly #opts: HubListenerOptions;
  readonly #server: http.Server;
  readonly #log: Logger;
  readonly clients: Registry<ClientProxyActor>;
  #ctx: HubContext;
  #wss: WebSocketServer;
  #verifier: JwtVerifier;
  #jwtKey: string;
  #address: { host: string; port: number } | undefined;
  readonly #limits: ListenerLimits;
  #pingTimer: NodeJS.Timeout | undefined;
  #pingEvery = 0;
  readonly #refused = new Map<string, { n: number; at: number }>();
  #userFullWarned = false;

  constructor(opts: HubListenerOptions) {
    super(`listener:${opts.listener.name}`, 'listener');
    if (!opts.listener.hub) throw new TypeError(`listener ${opts.listener.name} has no hub settings`);
    this.#opts = opts;
    this.#log = opts.log.child({ actorId: this.id, actorType: this.type, listener: opts.listener.name });
    this.clients = new Registry<ClientProxyActor>(`hub-clients:${opts.listener.name}`, {
      user: (c) => c.userId,
      node: (c) => (c.nodes.length > 0 ? c.nodes : undefined),
    });
    this.#ctx = this.#context(opts.listener);
    try {
      // Throws JwtConfigError for a config that cannot verify anything: the listener fails to start.
      this.#verifier = createJwtVerifier(opts.listener.hub.jwt);
    } catch (err) {
      this.exit('error', err);
      throw err;
    }
    this.#jwtKey = JSON.stringify(opts.listener.hub.jwt);
    this.#wss = newWss(opts.listener.hub);
    this.#limits = new ListenerLimits(opts.table, opts.shard, opts.listener, this.#log);
    this.#server = http.createServer();
    this.#server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => this.#upgrade(req, socket, head));
    this.#server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.#plainRequest(req, res));
    this.#server.on('error', (err) => this.#log.error({ err }, 'listener error'));
    this.#server.on('clientError', (err: Error, socket: net.Socket) => {
      this.#log.debug({ err }, 'hub listener: bad HTTP request');
      if (socket.writable) rejectUpgrade(socket, 400, { error: 'bad_request' });
      else socket.destroy();
    });
  }

  #context(listener: ShardListener): HubContext {
    return {
      shard: this.#opts.shard,
      listener,
      hub: listener.hub!,
      table: this.#opts.table,
      log: this.#log,
      registry: this.clients,
      post: this.#opts.post,
      readyNodes: this.#opts.readyNodes,
    };
  }

  get state(): string {
    return this.#state;
  }

  get address(): { host: string; port: number } | undefined {
    return this.#address;
  }

  /** The listener's configured name (its id is `listener:NAME`). */
  get name(): string {
    return this.#opts.listener.name;
  }

  override children(): Iterable<Actor> {
    const out: Actor[] = [];
    for (const { value } of this.clients.values()) out.push(value);
    return out;
  }

  override describe(): Record<string, unknown> {
    return {
      protocol: 'hub',
      listen: this.#address && `${this.#address.host}:${this.#address.port}`,
      path: this.#ctx.hub.path,
      clients: this.clients.size,
      registry: this.clients.sizes(),
      readyNodes: this.#opts.readyNodes(),
    };
  }

  #step(ev: ListenerEvent): void {
    const next = machine.next(this.#state, ev);
    if (next) this.#state = next;
  }

  /** Binds the listening socket. Rejects with `GH_ERR_LISTEN`. */
  async start(): Promise<this> {
    const { host, port, name } = this.#opts.listener;
    try {
      this.#address = await bindServer(this.#server, name, host, port, this.#opts.reusePort);
    } catch (err) {
      this.exit('error', (err as Error).cause ?? err);
      throw err;
    }
    this.#step('bound');
    this.#armKeepalive();
    this.markRunning();
    this.#log.info({ address: `${this.#address.host}:${this.#address.port}`, path: this.#ctx.hub.path }, 'listening');
    return this;
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
    for (const { value } of this.clients.values()) value.heartbeat();
  }

  // ---- accepting -------------------------------------------------------------------------------

  #plainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const body = JSON.stringify({ error: 'upgrade_required', message: 'this is a WebSocket endpoint' });
    res.writeHead(426, { Upgrade: 'websocket', Connection: 'close', 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    req.resume();
  }

  #upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const ctx = this.#ctx;
    const { shard, table } = ctx;
    socket.on('error', noop);
    if (this.#state !== 'listening') {
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
    const a = this.#limits.admit(socket);
    if (!a.ok) {
      if (a.reason === 'rate_limited') {
        this.#refusedLog('rate_limited', 'rate limit: new hub clients refused');
        rejectUpgrade(socket, 429, { error: 'rate_limited' }, { 'Retry-After': '1' });
      } else if (a.reason === 'over_limit') {
        this.#refusedLog('max_connections', 'maxConnections reached: hub client refused');
        rejectUpgrade(socket, 503, { error: 'over_limit', message: 'too many connections' });
      } else {
        this.#refusedLog('per_ip', 'maxConnectionsPerIp reached: hub client refused');
        rejectUpgrade(socket, 429, { error: 'over_limit', message: 'too many connections from this address' });
      }
      return;
    }
    socket.off('error', noop);
    table.listenerAdd(shard, ctx.listener.slot, L.ACTIVE, 1);
    const client = new ClientProxyActor(ctx, socket);
    client.holdsPlace = true;
    client.ipKey = a.ipKey;
    client.parent = this;
    this.clients.register(client, client);
    const token = bearerToken(req.headers.authorization, url.searchParams);
    if (token === undefined) {
      this.#unauthorized(client, new TokenError('missing_token', 'no Authorization: Bearer header and no token parameter'));
      return;
    }
    const verifier = this.#verifier;
    const wss = this.#wss;
    verifier
      .verify(token)
      .then(
        ({ userId }) => this.#admitUser(client, ctx, wss, req, socket, head, userId),
        (err: unknown) => this.#unauthorized(client, err instanceof TokenError ? err : new TokenError('malformed', String(err))),
      )
      // A bug while admitting crashes this client, never the shard (an unhandled rejection would).
      .catch((err: unknown) => client.crash(err));
  }

  #unauthorized(client: ClientProxyActor, err: TokenError): void {
    if (!client.handshaking) return;
    this.#refusedLog(`token:${err.reason}`, 'hub client refused: bad or missing token', { reason: err.reason });
    client.reject(401, { error: 'unauthorized', reason: err.reason }, 'error', { 'WWW-Authenticate': `Bearer error="invalid_token"` });
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
      if (r === IP.REJECTED) {
        this.#refusedLog('per_user', 'maxClientsPerUser reached: hub client refused', { userId, maxClientsPerUser: max });
        client.reject(429, { error: 'too_many_clients', message: `user has ${max} clients already` }, 'over_limit', { 'Retry-After': '1' });
        return;
      }
      if (r === IP.ADMITTED) client.userKey = key;
      else if (!this.#userFullWarned) {
        // The keyed table's stripe for this user is full (about 16,000 (user or IP, shard) pairs
        // per listener): the cap fails open for this client rather than refusing everyone.
        this.#userFullWarned = true;
        this.#log.warn({ maxClientsPerUser: max }, 'per-user table full: a client was admitted without a per-user count (logged once)');
      }
    }
    wss.handleUpgrade(req, socket, head, (ws) => client.accept(ws, userId));
  }

  /** Logs a refusal at info, at most once a second per kind, with how many were refused since. */
  #refusedLog(kind: string, msg: string, extra?: Record<string, unknown>): void {
    const now = Date.now();
    let r = this.#refused.get(kind);
    if (!r) this.#refused.set(kind, (r = { n: 0, at: 0 }));
    r.n++;
    if (now < r.at) {
      this.#log.debug({ ...extra, kind }, msg);
      return;
    }
    this.#log.info({ ...extra, refused: r.n }, msg);
    r.n = 0;
    r.at = now + REFUSAL_LOG_EVERY_MS;
  }

  // ---- routing (HubToShard) --------------------------------------------------------------------

  /** Queues a node's frame to its target's clients here; returns how many live clients took it. */
  deliver(to: HubTarget, frame: string): number {
    let n = 0;
    switch (to.kind) {
      case 'client': {
        const e = this.clients.get(`client:${to.clientId}`);
        if (e && e.value.deliver(frame)) n++;
        break;
      }
      case 'user': {
        // Encoded once for all of the user's clients (ws would encode a string once per send).
        const bytes = this.clients.count('user', to.userId) > 1 ? Buffer.from(frame) : frame;
        this.clients.forEachIn('user', to.userId, (c) => {
          if (c.deliver(bytes)) n++;
        });
        break;
      }
      case 'all': {
        const bytes = this.clients.size > 1 ? Buffer.from(frame) : frame;
        this.clients.forEach((c) => {
          if (c.deliver(bytes)) n++;
        });
        break;
      }
    }
    return n;
  }

  /** Announces every registered client again (the main thread's presence restarted); returns how many. */
  resync(): number {
    let n = 0;
    this.clients.forEach((c) => {
      if (c.announce()) n++;
    });
    return n;
  }

  /** A frame for one client (a response, an error); dropped silently when the client is gone. */
  reply(clientId: string, frame: string): boolean {
    const e = this.clients.get(`client:${clientId}`);
    return e !== undefined && e.value.deliver(frame);
  }

  /** A node went down: its bound clients get `node-down` and lose the binding. */
  nodeDown(node: string): number {
    let n = 0;
    for (const { value } of this.clients.lookup('node', node)) if (value.nodeDown(node)) n++;
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
    const jwtKey = JSON.stringify(hub.jwt);
    const verifier = jwtKey === this.#jwtKey ? this.#verifier : createJwtVerifier(hub.jwt);
    this.#verifier = verifier;
    this.#jwtKey = jwtKey;
    this.#opts.listener = listener;
    this.#ctx = this.#context(listener);
    this.#wss = newWss(hub);
    this.#limits.configure(listener);
    if (this.#state === 'listening') this.#armKeepalive();
  }

  // ---- stopping --------------------------------------------------------------------------------

  /** Stops accepting (the drain's first step); open clients go on being served. */
  stopAccepting(): void {
    if (this.#state === 'closed' || this.#state === 'draining') return;
    this.#step('drain');
    this.#server.close();
    this.#server.closeIdleConnections();
    this.#log.info({ clients: this.clients.size }, 'draining');
  }

  protected requestStop(): boolean {
    this.stopAccepting();
    this.#exitWhenEmpty();
    return true;
  }

  #exitWhenEmpty(): void {
    if (this.clients.size === 0) {
      this.#close('shutdown');
      return;
    }
    for (const { actor } of this.clients.values()) {
      actor.monitor(() => {
        // After the DOWN has reached every watcher: a client that re-registered (a new node
        // binding) has its registry watcher behind this one, so its entry is only gone then.
        queueMicrotask(() => {
          if (this.clients.size === 0 && this.status === 'stopping') this.#close('shutdown');
        });
      });
    }
  }

  protected forceStop(): void {
    this.stopAccepting();
    for (const { actor } of [...this.clients.values()]) actor.kill();
    this.#close('killed');
  }

  #close(reason: 'shutdown' | 'killed'): void {
    if (this.#state === 'closed') return;
    clearInterval(this.#pingTimer);
    this.#pingTimer = undefined;
    this.#server.close();
    this.#server.closeAllConnections();
    this.#step('closed');
    this.exit(reason);
  }
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
