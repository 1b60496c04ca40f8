/**
 * What a shard keeps for its http listeners: the upstream pools and balancers they share, the
 * shard's HTTP counters (read by the main thread at scrape time, nothing per request crosses
 * threads), the request id generator and the shard's tracer (`telemetry.otlp`: spans are
 * exported from this thread). Kept apart from shard-runtime.ts as shard-hub.ts is.
 */
import type { Logger } from 'pino';
import type { Actor } from '../runtime/actor.ts';
import { HttpListenerActor } from '../actors/http-listener.ts';
import type { HttpConnectionActor } from '../actors/http-connection.ts';
import { AccessLog } from '../http/access-log.ts';
import { httpPoolHandlers } from '../http/dispatch.ts';
import { RequestIdGenerator } from '../http/middleware/request-id.ts';
import { HttpStats } from '../http/stats.ts';
import { HttpUpstreams } from '../http/upstreams.ts';
import { ShardTracing } from '../telemetry/shard-tracing.ts';
import type { Balancer } from './balancer.ts';
import type { ShardConfig, ShardListener, ShardUpstream } from './shard-config.ts';
import type { StateTable } from './state-table.ts';

/** The fields every listener of a shard is made with. */
export interface ListenerCommon {
  shard: number;
  listener: ShardListener;
  table: StateTable;
  log: Logger;
  reusePort: boolean;
}

/**
 * The HTTP part of one shard.
 *
 * @example
 * const http = new ShardHttp(config, (u) => new Balancer(u, table), shard, log);
 * await http.start(common);
 */
export class ShardHttp {
  readonly stats = new HttpStats();
  readonly ids = new RequestIdGenerator();
  readonly upstreams: HttpUpstreams<HttpConnectionActor>;
  readonly tracing: ShardTracing;

  constructor(config: ShardConfig, makeBalancer: (u: ShardUpstream) => Balancer, shard: number, log: Logger) {
    this.upstreams = new HttpUpstreams(httpPoolHandlers, makeBalancer);
    this.upstreams.configure(config.upstreams);
    this.tracing = new ShardTracing(shard, log);
    void this.tracing.configure(config.telemetry);
  }

  /** A new http listener for `common.listener`, started once the tracer (if configured) is loaded. */
  async start(common: ListenerCommon): Promise<HttpListenerActor> {
    await this.tracing.ready;
    return this.listener(common).start();
  }

  /** A new http listener actor for `common.listener` (not started). */
  listener(common: ListenerCommon): HttpListenerActor {
    const sample = common.listener.http!.accessLogSample;
    const accessLog = sample > 0 ? new AccessLog(common.log.child({ listener: common.listener.name, actorType: 'access-log' }), sample) : undefined;
    return new HttpListenerActor({ ...common, upstreams: this.upstreams, stats: this.stats, accessLog, ids: this.ids, tracing: this.tracing });
  }

  /** A reload: new balancers; pools of backends that left close once their requests end; the tracer as `telemetry` says (resolves once it is in place). */
  configure(config: ShardConfig): Promise<void> {
    this.upstreams.configure(config.upstreams);
    return this.tracing.configure(config.telemetry);
  }

  /** The shard drained: the spans of its requests are exported before the thread may end. */
  flush(): Promise<void> {
    return this.tracing.flush();
  }

  /** The shard ends: every pooled socket is closed now; the tracer exports what is left. */
  async close(): Promise<void> {
    await Promise.all([this.upstreams.close(true), this.tracing.close()]);
  }
}

/** True for an http listener actor. */
export function isHttp(a: Actor | undefined): a is HttpListenerActor {
  return a instanceof HttpListenerActor;
}
