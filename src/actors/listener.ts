import net from 'node:net';
import type { Logger } from 'pino';
import type { ShardListener, ShardUpstream } from '../workers/shard-config.ts';
import type { StateTable } from '../workers/state-table.ts';
import type { Balancer } from '../workers/balancer.ts';
import { ListenerBase } from './listener-base.ts';
import { ConnectionActor, type ConnectionContext } from './connection.ts';
import type { ReadCallback } from '../net/adopt-socket.ts';

export { listenerMachine } from './listener-base.ts';

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
 * A `protocol: tcp` listener on one shard (`listener:<name>`): each accepted socket within the
 * listener's limits becomes a {@link ConnectionActor} proxying it to a backend of its upstream.
 * The lifecycle, limits, drain and kill are {@link ListenerBase}'s.
 *
 * @example
 * const l = await new ListenerActor(opts).start(); // resolves once bound
 * l.stopAccepting(); await l.shutdown(30_000);      // drain, then kill what is left
 */
export class ListenerActor extends ListenerBase<ConnectionActor> {
  readonly #ctx: ConnectionContext;

  constructor(opts: ListenerOptions) {
    // No secondary index on the hot path yet: a peer-address index costs a getpeername() per
    // accept (see docs/benchmarks.md); the per-IP limit reads the address only when configured.
    // No map by id: connection ids are unique, nothing looks one up, and a map would churn (registry.ts).
    super(opts, { name: `connections:${opts.listener.name}`, byId: false });
    this.#ctx = {
      shard: opts.shard,
      listener: opts.listener,
      table: opts.table,
      balancer: opts.balancer,
      connectTimeoutMs: opts.upstream?.connectTimeoutMs ?? 2_000,
      connectRetries: opts.upstream?.connectRetries ?? 2,
      log: this.connectionLog,
      registry: this.connections,
      mode: opts.connectionActor,
    };
  }

  protected createServer(): net.Server {
    return net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  }

  override describe(): Record<string, unknown> {
    return { ...super.describe(), connections: this.connections.size };
  }

  /** A tcp listener may carry a protocol where the server speaks first: untrusted peers are not read ahead. */
  protected override get peeksForProxyHeaders(): boolean {
    return false;
  }

  protected override acceptReads(): ReadCallback {
    return ConnectionActor.clientRead;
  }

  /** Plain connections are RawSockets (net/raw-socket.ts): the connection uses only what one offers. */
  protected override acceptsRawSockets(): boolean {
    return true;
  }

  protected override onAdmitted(socket: net.Socket, ipKey: number): void {
    const conn = this.adopt(new ConnectionActor(this.#ctx, ConnectionActor.adopt(socket)));
    conn.ipKey = ipKey;
    conn.start();
  }

  protected refuse(socket: net.Socket): void {
    socket.destroy();
  }

  /**
   * Applies a reloaded config that keeps the address: limits, timeouts and upstream apply to new
   * connections from now on; open ones keep theirs. The rate limit keeps its bucket (its cell in
   * the table), so a reload neither refills nor empties it.
   */
  reconfigure(listener: ShardListener, upstream: ShardUpstream | undefined, balancer: Balancer | undefined): void {
    this.configure(listener);
    this.#ctx.listener = listener;
    this.#ctx.balancer = balancer;
    this.#ctx.connectTimeoutMs = upstream?.connectTimeoutMs ?? 2_000;
    this.#ctx.connectRetries = upstream?.connectRetries ?? 2;
  }
}
