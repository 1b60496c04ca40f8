import net from 'node:net';
import type { Logger } from 'pino';
import type { Refusal } from '../net/listener-limits.ts';
import type { StateTable } from '../workers/state-table.ts';
import type { ShardListener } from '../workers/shard-config.ts';
import { compileRoutes, type CompiledRoutes } from '../http/routes.ts';
import { Dispatcher, type DispatchObservers } from '../http/dispatch.ts';
import type { HttpUpstreams } from '../http/upstreams.ts';
import { gatewayAnswer } from '../http/middleware/answers.ts';
import { RequestIdGenerator } from '../http/middleware/request-id.ts';
import type { ShardTracing } from '../telemetry/shard-tracing.ts';
import { ListenerBase } from './listener-base.ts';
import { adoptSocket, type ReadCallback } from '../net/adopt-socket.ts';
import { HttpConnectionActor, onHttpClientRead, type HttpAccessEntry, type HttpConnectionContext, type HttpObservers } from './http-connection.ts';

/** What the shard gives each http listener: its upstreams, counters and access log. */
export interface HttpListenerOptions {
  shard: number;
  listener: ShardListener;
  table: StateTable;
  log: Logger;
  reusePort: boolean;
  upstreams: HttpUpstreams<HttpConnectionActor>;
  stats: HttpObservers & DispatchObservers;
  /** The listener's access log (made by the shard when `accessLog` is on). */
  accessLog: { record(e: HttpAccessEntry): void; close(): void } | undefined;
  ids: RequestIdGenerator;
  /** The shard's tracer (`telemetry.otlp`). */
  tracing: ShardTracing;
}

/** The answers to a connection refused by the listener's limits, then closed. */
const REFUSED: Record<Refusal, 'rate_limited' | 'unavailable'> = { rate_limited: 'rate_limited', over_limit: 'unavailable', per_ip: 'rate_limited' };

/**
 * A `protocol: http` listener on one shard (`listener:<name>`): each accepted socket within the
 * listener's limits becomes an {@link HttpConnectionActor}. Routes are compiled once per config
 * snapshot here; a reload swaps them for new requests, and open connections (WebSocket tunnels
 * too) stay. The lifecycle, limits, drain and kill are {@link ListenerBase}'s.
 *
 * @example
 * const l = await new HttpListenerActor(opts).start(); // resolves once bound
 */
export class HttpListenerActor extends ListenerBase<HttpConnectionActor> {
  readonly #ctx: HttpConnectionContext;
  readonly #opts: HttpListenerOptions;

  constructor(opts: HttpListenerOptions) {
    // No map by id: connection ids are unique, nothing looks one up, and a map would churn (registry.ts).
    super(opts, { name: `connections:${opts.listener.name}`, byId: false });
    this.#opts = opts;
    const routes = compileRoutes(opts.listener.http!, opts.ids);
    this.#ctx = {
      shard: opts.shard,
      listener: opts.listener,
      table: opts.table,
      log: this.connectionLog,
      registry: this.connections,
      routes,
      upstreams: opts.upstreams,
      stats: opts.stats,
      accessLog: opts.accessLog,
      dispatcher: new Dispatcher(opts.table, opts.shard, opts.listener.slot, opts.listener.name, opts.stats, this.connectionLog),
      draining: false,
      tracing: opts.tracing,
    };
  }

  protected createServer(): net.Server {
    return net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  }

  /**
   * For `/actors`: besides the connections and requests in flight, the upstream pools of this
   * shard (`upstream/address` → busy, idle, queued; shared by the shard's http listeners, so each
   * of them lists the same pools). A busy count that stays above zero with no request in flight
   * is a socket never given back.
   */
  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      connections: this.connections.size,
      routes: this.#ctx.routes.byIndex.length,
      requestsInFlight: this.#ctx.dispatcher.active,
      pools: this.#opts.upstreams.describe(),
    };
  }

  protected override acceptReads(): ReadCallback {
    return onHttpClientRead as ReadCallback;
  }

  /** Plain connections are RawSockets: the HTTP connection uses only what one offers. */
  protected override acceptsRawSockets(): boolean {
    return true;
  }

  protected override onAdmitted(socket: net.Socket, ipKey: number): void {
    // Reads go through `onread` into the thread's reused buffer (copied to the request's size):
    // no 64 KiB allocation and no stream 'data' machinery per request (a TLS or PROXY-protocol
    // socket stays as it is and reads through 'data').
    const conn = this.adopt(new HttpConnectionActor(this.#ctx, adoptSocket(socket, onHttpClientRead as ReadCallback)));
    conn.ipKey = ipKey;
    conn.start();
  }

  protected refuse(socket: net.Socket, reason: Refusal): void {
    socket.on('error', () => {});
    socket.end(gatewayAnswer(REFUSED[reason], this.#opts.ids.next(), { close: true, retryAfter: 1 }));
    socket.destroySoon();
  }

  protected override onDraining(): void {
    this.#ctx.draining = true;
    for (const { actor } of this.connections.values()) (actor as HttpConnectionActor).drainNow();
  }

  protected override onResumed(): void {
    this.#ctx.draining = false;
  }

  protected override onClosed(): void {
    this.#opts.accessLog?.close();
  }

  /** The routes in force for new requests. */
  get routes(): CompiledRoutes {
    return this.#ctx.routes;
  }

  /**
   * Applies a reloaded config that keeps the address: routes, limits and timeouts apply to new
   * requests from now on; a request in flight and an upgraded connection keep theirs. Throws
   * (and keeps the old routes) if the new routes cannot be compiled.
   */
  reconfigure(listener: ShardListener): void {
    const routes = compileRoutes(listener.http!, this.#opts.ids);
    this.configure(listener);
    this.#ctx.listener = listener;
    this.#ctx.routes = routes;
    this.#ctx.dispatcher.configure(listener.slot, listener.name);
  }
}
