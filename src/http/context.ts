/**
 * What an http listener shares with its connections, and what a request's end is reported to.
 * Types only: the listener builds one {@link HttpConnectionContext} per listener (not per
 * connection) and swaps its `routes` on a reload.
 */
import type { Logger } from 'pino';
import type { HttpConnectionActor } from '../actors/http-connection.ts';
import type { Registry } from '../runtime/registry.ts';
import type { ShardListener } from '../workers/shard-config.ts';
import type { StateTable } from '../workers/state-table.ts';
import type { Dispatcher } from './dispatch.ts';
import type { CompiledRoutes } from './routes.ts';
import type { HttpUpstreams } from './upstreams.ts';
import type { ShardTracing } from '../telemetry/shard-tracing.ts';

/**
 * The shard's HTTP counters (`HttpStats`), as the connection calls them.
 *
 * @example
 * stats.request('web', 'api', 200, 0.004);
 */
export interface HttpObservers {
  request(listener: string, route: string, code: number, seconds: number): void;
  retry(upstream: string): void;
}

/**
 * One access log line's fields (`AccessLog.record`). Bytes are body bytes.
 *
 * @example
 * accessLog.record({ listener: 'web', route: 'api', method: 'GET', path: '/', status: 200, durationMs: 1.2, requestId: 'x', bytesIn: 0, bytesOut: 13, remoteAddress: '10.0.0.7' });
 */
export interface HttpAccessEntry {
  listener: string; route: string; method: string; path: string; status: number; durationMs: number;
  upstream?: string; backend?: string; requestId: string; bytesIn: number; bytesOut: number; remoteAddress: string;
  /** With `telemetry.otlp`: the request's trace id. */
  traceId?: string;
}

/**
 * Everything an http listener shares with its connections (one object per listener).
 *
 * @example
 * const conn = new HttpConnectionActor(ctx, socket);
 */
export interface HttpConnectionContext {
  shard: number;
  listener: ShardListener;
  table: StateTable;
  log: Logger;
  registry: Registry<HttpConnectionActor>;
  /** The routes of the current config snapshot (a reload swaps it; a request keeps the one it started with). */
  routes: CompiledRoutes;
  upstreams: HttpUpstreams<HttpConnectionActor>;
  stats: HttpObservers;
  accessLog: { record(e: HttpAccessEntry): void } | undefined;
  dispatcher: Dispatcher;
  /** The listener stopped accepting: answers carry `Connection: close`. */
  draining: boolean;
  /** The shard's tracer: `tracing.tracer` is read once per request head (undefined: off). */
  tracing: ShardTracing;
  /**
   * The listener's local port (`X-Forwarded-Port`), read from the first connection's socket
   * and kept: every connection of a listener shares it, and a getsockname per connection costs.
   */
  localPort?: string;
}
