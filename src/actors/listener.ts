import net from 'node:net';
import { setup } from 'xstate';
import type { Logger } from 'pino';
import { Actor } from '../runtime/actor.ts';
import { compile } from '../runtime/compiled-machine.ts';
import { Registry } from '../runtime/registry.ts';
import { bindServer } from '../net/bind.ts';
import { L, type StateTable } from '../workers/state-table.ts';
import { ListenerLimits } from '../net/listener-limits.ts';
import type { ShardListener, ShardUpstream } from '../workers/shard-config.ts';
import type { Balancer } from '../workers/balancer.ts';
import { ConnectionActor, type ConnectionContext } from './connection.ts';

type ListenerState = 'binding' | 'listening' | 'draining' | 'closed';
type ListenerEvent = 'bound' | 'drain' | 'closed';

/** A listener's lifecycle: bound on its shard, then draining (no new connections), then closed. */
export const listenerMachine = setup({ types: { events: {} as { type: ListenerEvent } } }).createMachine({
  id: 'listener',
  initial: 'binding',
  states: {
    binding: { on: { bound: 'listening', drain: 'draining', closed: 'closed' } },
    listening: { on: { drain: 'draining', closed: 'closed' } },
    draining: { on: { closed: 'closed' } },
    closed: { type: 'final' },
  },
});
const table = compile<ListenerState, ListenerEvent>(listenerMachine);

export interface ListenerOptions {
  shard: number;
  listener: ShardListener;
  upstream: ShardUpstream | undefined;
  balancer: Balancer | undefined;
  table: StateTable;
  log: Logger;
  connectionActor: 'light' | 'xstate';
  /** Bind with SO_REUSEPORT, so every shard can bind the same address. */
  reusePort: boolean;
}

/**
 * One listener on one shard (`listener:<name>`). It owns its connections as OTP's
 * `simple_one_for_one` does: they live in a {@link Registry}, not as xstate children, and leave it
 * by their own DOWN. Listener-wide limits hold across shards through the state table.
 *
 * @example
 * const l = await new ListenerActor(opts).start(); // resolves once bound
 * l.stopAccepting(); await l.shutdown(30_000);      // drain, then kill what is left
 */
export class ListenerActor extends Actor {
  #state: ListenerState = table.initial;
  readonly #opts: ListenerOptions;
  readonly #server: net.Server;
  readonly #log: Logger;
  readonly connections: Registry<ConnectionActor>;
  readonly #ctx: ConnectionContext;
  #address: { host: string; port: number } | undefined;
  readonly #limits: ListenerLimits;
  /** Rate-limited connections since the last warning, and when the next warning may be logged. */
  #rateRejected = 0;
  #rateWarnAt = 0;

  constructor(opts: ListenerOptions) {
    super(`listener:${opts.listener.name}`, 'listener');
    this.#opts = opts;
    this.#log = opts.log.child({ actorId: this.id, actorType: this.type, listener: opts.listener.name });
    // No secondary index on the hot path yet: a peer-address index costs a getpeername() per
    // accept (2% of churn CPU, measured); the per-IP limit reads the address only when configured.
    this.connections = new Registry<ConnectionActor>(`connections:${opts.listener.name}`);
    this.#ctx = {
      shard: opts.shard,
      listener: opts.listener,
      table: opts.table,
      balancer: opts.balancer,
      connectTimeoutMs: opts.upstream?.connectTimeoutMs ?? 2_000,
      connectRetries: opts.upstream?.connectRetries ?? 2,
      log: this.#log,
      registry: this.connections,
      mode: opts.connectionActor,
    };
    this.#limits = new ListenerLimits(opts.table, opts.shard, opts.listener, this.#log);
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) => this.#accept(s));
    this.#server.on('error', (err) => this.#log.error({ err }, 'listener error'));
  }

  get state(): string {
    return this.#state;
  }

  get address(): { host: string; port: number } | undefined {
    return this.#address;
  }

  override children(): Iterable<Actor> {
    const out: Actor[] = [];
    for (const { actor } of this.connections.values()) out.push(actor);
    return out;
  }

  override describe(): Record<string, unknown> {
    const d: Record<string, unknown> = { listen: this.#address && `${this.#address.host}:${this.#address.port}`, connections: this.connections.size, registry: this.connections.sizes() };
    if (this.#opts.listener.maxConnectionsPerIp > 0) d.perIpUntracked = this.#opts.table.ipUntracked(this.#opts.listener.slot);
    return d;
  }

  #step(ev: ListenerEvent): void {
    const next = table.next(this.#state, ev);
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
    this.markRunning();
    this.#log.info({ address: `${this.#address.host}:${this.#address.port}` }, 'listening');
    return this;
  }

  #accept(socket: net.Socket): void {
    const ctx = this.#ctx;
    if (this.#state !== 'listening') {
      socket.destroy();
      return;
    }
    // Every limit holds for the listener as a whole: its cells are shared by all shards.
    const a = this.#limits.admit(socket);
    if (!a.ok) {
      socket.destroy();
      if (a.reason === 'rate_limited') this.#rateLimited();
      return;
    }
    ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, L.ACTIVE, 1);
    const conn = new ConnectionActor(ctx, ConnectionActor.adopt(socket));
    conn.ipKey = a.ipKey;
    conn.parent = this;
    this.connections.register(conn, conn);
    conn.start();
  }

  /** Logs a connection refused by the rate limit: debug per connection, a warning at most once a second. */
  #rateLimited(): void {
    this.#log.debug('connection rate limited');
    this.#rateRejected++;
    const now = Date.now();
    if (now < this.#rateWarnAt) return;
    this.#rateWarnAt = now + 1_000;
    const { perSecond, burst } = this.#opts.listener.rateLimit!;
    this.#log.warn({ rejected: this.#rateRejected, perSecond, burst }, 'rate limit: new connections rejected');
    this.#rateRejected = 0;
  }

  /** The listener's configured name (its id is `listener:NAME`). */
  get name(): string {
    return this.#opts.listener.name;
  }

  /**
   * Applies a reloaded config that keeps the address: limits, timeouts and upstream apply to new
   * connections from now on; open ones keep theirs. The rate limit keeps its bucket (its cell in
   * the table), so a reload neither refills nor empties it.
   */
  reconfigure(listener: ShardListener, upstream: ShardUpstream | undefined, balancer: Balancer | undefined): void {
    this.#opts.listener = listener;
    this.#ctx.listener = listener;
    this.#limits.configure(listener);
    this.#opts.upstream = upstream;
    this.#opts.balancer = balancer;
    this.#ctx.balancer = balancer;
    this.#ctx.connectTimeoutMs = upstream?.connectTimeoutMs ?? 2_000;
    this.#ctx.connectRetries = upstream?.connectRetries ?? 2;
  }

  /** Stops accepting (the drain's first step); open connections go on. */
  stopAccepting(): void {
    if (this.#state === 'closed' || this.#state === 'draining') return;
    this.#step('drain');
    this.#server.close();
    this.#log.info({ connections: this.connections.size }, 'draining');
  }

  protected requestStop(): boolean {
    this.stopAccepting();
    this.#exitWhenEmpty();
    return true;
  }

  #exitWhenEmpty(): void {
    if (this.connections.size === 0) {
      this.#close('shutdown');
      return;
    }
    // The last connection's DOWN ends the listener.
    for (const { actor } of this.connections.values()) {
      actor.monitor(() => {
        if (this.connections.size === 0 && this.status === 'stopping') this.#close('shutdown');
      });
    }
  }

  protected forceStop(): void {
    this.stopAccepting();
    for (const { actor } of [...this.connections.values()]) actor.kill();
    this.#close('killed');
  }

  #close(reason: 'shutdown' | 'killed'): void {
    if (this.#state === 'closed') return;
    this.#server.close();
    this.#step('closed');
    this.exit(reason);
  }
}
